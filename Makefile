# Shortcuts; every target works on a fresh Debian machine (scripts/bootstrap.sh installs the rest).
.PHONY: lab lab13 site lab-down test lint pytest molecule bench-site bench-etl bench-refresh

lab:            ## build the three-host lab (Debian 12) and run site.yml on it
	bash scripts/lab.sh up
lab13:          ## the same lab on Debian 13 (MariaDB 11.8)
	LAB_DEBIAN=13 bash scripts/lab.sh up
site:           ## run site.yml again on the running lab
	bash scripts/lab.sh site
lab-down:       ## remove the lab containers and network
	bash scripts/lab.sh down
test:           ## every test (what CI runs)
	bash scripts/test.sh
lint:
	bash scripts/test.sh lint
pytest:
	bash scripts/test.sh pytest
molecule:
	bash scripts/test.sh default replication replication-debian13
bench-site:     ## first vs second site.yml run on a fresh lab
	.venv/bin/python bench/bench_site.py
bench-etl:      ## CSV ETL at 1,000,000 order lines vs raw LOAD DATA, executemany and to_sql
	.venv/bin/pip install -q -r requirements-bench.txt
	.venv/bin/python bench/bench_etl.py
bench-refresh:  ## incremental vs full materialized-view refresh at 1,000,000 order lines
	.venv/bin/python bench/bench_view_refresh.py
