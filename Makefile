# Shortcuts; every target works on a fresh Debian machine (scripts/bootstrap.sh installs the rest).
.PHONY: lab lab13 lab-aux site lab-down test lint pytest molecule bench-site bench-etl bench-refresh \
	bench-failover bench-replication bench-connections bench-backup

lab:            ## build the three-host lab (Debian 12) and run site.yml on it
	bash scripts/lab.sh up
lab13:          ## the same lab on Debian 13 (MariaDB 11.8)
	LAB_DEBIAN=13 bash scripts/lab.sh up
lab-aux:        ## add the proxy + backup host (inventory/lab-aux) to the running lab
	bash scripts/lab.sh aux
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
bench-failover: ## write-unavailability window of 5 switchovers and 5 failovers on the lab
	.venv/bin/python bench/bench_failover.py
bench-replication: ## primary TPS and replica lag: serial vs parallel apply, sync_binlog 0 vs 1
	.venv/bin/python bench/bench_replication.py
bench-connections: ## TLS and proxy-hop cost, reader-port spread (lab + make lab-aux)
	.venv/bin/python bench/bench_connections.py
bench-backup:   ## dump vs streamed replica seeding, backup, PITR at 1,000,000 lines (+ lab-aux)
	.venv/bin/python bench/bench_backup.py
