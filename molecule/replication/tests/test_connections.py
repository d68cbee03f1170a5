"""Safe connections on the replication scenario's cluster (docs/connections.md): TLS for clients
and replication, the POS accounts limited to the cluster's network, certificate renewal.

Logins run inside the containers with the mariadb client, which reads the [client-mariadb] CA the
mariadb_tls role writes: it checks each server's certificate against the cluster CA.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import subprocess
import threading
import time

import pymysql
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_replication import (
    ALL_REPLICAS,
    CLUSTER_CA,
    LATE_REPLICAS,
    PRIMARY,
    PROJECT,
    REPLICAS,
    RUNNER,
    host,
    replica_status,
    sql,
    value,
    wait_for_replicas,
)

MEMBERS = [PRIMARY, *ALL_REPLICAS]
SECRETS = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "secrets")
PROBE_USER = "tls_probe"


def address(name):
    """The container's address on the scenario's network."""
    return host(name).check_output("hostname -I").split()[0]


def login(client, server_address, user, password, *options, query="SHOW STATUS LIKE 'Ssl_cipher'"):
    """A TCP login from the container ``client``: the command's result (rc, stdout, stderr)."""
    command = ["mariadb", *options, "-N", "-B", "-h", server_address, "-u", user,
               f"-p{password}", f"--execute={query}"]
    return host(client).run(" ".join(["%s"] * len(command)), *command)


def cipher(result):
    assert result.rc == 0, result.stderr
    name, _, used = result.stdout.strip().partition("\t")
    assert name == "Ssl_cipher"
    return used


def run_playbook(playbook, *extra):
    """ansible-playbook on the scenario's inventory (extra "-i FILE" arguments add to it)."""
    # molecule exports ANSIBLE_FORCE_COLOR, which beats ANSIBLE_NOCOLOR: the recap must be parsed
    env = {key: val for key, val in os.environ.items() if key != "ANSIBLE_FORCE_COLOR"}
    env.update(ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        ["ansible-playbook", "-i", os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]),
         playbook, *extra], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900,
        check=False)


def recap_changed(result):
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", result.stdout, re.M)}


@pytest.fixture(scope="module")
def probe():
    """An ordinary account that may log in from anywhere: only the transport is tested with it."""
    password = secrets.token_hex(16)
    sql(PRIMARY, f"CREATE OR REPLACE USER {PROBE_USER}@'%' IDENTIFIED BY '{password}'")
    wait_for_replicas()
    yield password
    sql(PRIMARY, f"DROP USER IF EXISTS {PROBE_USER}@'%'")


@pytest.mark.parametrize("member", MEMBERS)
def test_plain_tcp_is_refused_and_tls_is_used_with_the_certificate_checked(member, probe):
    client = ALL_REPLICAS[0] if member == PRIMARY else PRIMARY
    # Without the option files' CA and certificate check (--no-defaults): plain TCP.
    plain = login(client, address(member), PROBE_USER, probe, "--no-defaults", "--skip-ssl")
    # MariaDB 10.11 answers "Access denied" (11.x names the insecure transport); the same login
    # over TLS, just below, succeeds.
    assert plain.rc != 0
    assert "insecure transport" in plain.stderr or "Access denied" in plain.stderr, plain.stderr
    # The client checks the certificate (ssl-verify-server-cert): the address must be in it.
    assert cipher(login(client, address(member), PROBE_USER, probe)) != ""
    assert value(member, "SELECT @@have_ssl") == "YES"
    assert value(member, "SELECT @@require_secure_transport") == "1"


@pytest.mark.parametrize("replica", ALL_REPLICAS)
def test_replication_uses_tls_and_verifies_the_primary(replica):
    status = replica_status(replica)
    assert status["Slave_IO_Running"] == "Yes", status.get("Last_IO_Error")
    assert status["Master_SSL_Allowed"] == "Yes"
    assert status["Master_SSL_Verify_Server_Cert"] == "Yes"
    assert status["Master_SSL_CA_File"] == value(replica, "SELECT @@ssl_ca")
    grants = sql(PRIMARY, f"SHOW GRANTS FOR repl@'{address(replica)}'")
    assert any("REQUIRE SSL" in row[0] for row in grants), grants


def test_a_wrong_certificate_stops_replication_and_the_right_one_resumes_it():
    """Verification is real: a replica trusting another CA refuses the primary."""
    replica = ALL_REPLICAS[0]
    host(replica).check_output("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
                               "-nodes -subj /CN=other-ca -keyout /root/other-ca.key "
                               "-out /root/other-ca.pem -days 1 2>/dev/null")
    original_ca = value(replica, "SELECT @@ssl_ca")
    try:
        sql(replica, "STOP SLAVE; CHANGE MASTER TO MASTER_SSL_CA = '/root/other-ca.pem'; "
                     "START SLAVE")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = replica_status(replica)
            if status["Last_IO_Errno"] not in ("", "0"):
                break
            time.sleep(0.5)
        assert status["Slave_IO_Running"] != "Yes", status
        assert "certificate" in status["Last_IO_Error"].lower() or "SSL" in status["Last_IO_Error"]
    finally:
        sql(replica, f"STOP SLAVE; CHANGE MASTER TO MASTER_SSL_CA = '{original_ca}'; START SLAVE")
        host(replica).check_output("rm -f /root/other-ca.key /root/other-ca.pem")
    wait_for_replicas()
    assert replica_status(replica)["Slave_IO_Running"] == "Yes"


def test_pos_accounts_log_in_from_the_cluster_network_only_and_over_tls():
    accounts = "SELECT User, Host FROM mysql.user WHERE User IN ('pos_app','pos_report','pos_etl')"
    hosts = {tuple(row) for row in sql(PRIMARY, accounts)}
    assert hosts and not any(h == "%" for _, h in hosts), hosts
    with open(os.path.join(SECRETS, "pos_app"), encoding="utf-8") as handle:
        password = handle.read().split()[0]
    # From another member of the cluster network: in, over TLS.
    assert cipher(login(ALL_REPLICAS[0], address(PRIMARY), "pos_app", password)) != ""
    # From 127.0.0.1, outside the allowed networks: refused although the password is right.
    outside = login(PRIMARY, "127.0.0.1", "pos_app", password)
    assert outside.rc != 0
    assert "Access denied" in outside.stderr, outside.stderr


def test_a_certificate_close_to_expiry_is_renewed_without_a_restart():
    member = ALL_REPLICAS[0]
    before = sql(member, "SHOW GLOBAL STATUS LIKE 'Ssl_server_not_after'")[0][1]
    uptime = int(sql(member, "SHOW GLOBAL STATUS LIKE 'Uptime'")[0][1])
    # A renewal window longer than the certificate's remaining life: it is "close to expiry".
    window = ("-e", "mariadb_tls_renew_days=500", "-e", "mariadb_tls_cert_valid_days=800")
    renewed = run_playbook("playbooks/tls.yml", "--limit", member, *window)
    assert renewed.returncode == 0, renewed.stdout[-4000:]
    assert recap_changed(renewed).get(member, 0) > 0, renewed.stdout[-4000:]
    after = sql(member, "SHOW GLOBAL STATUS LIKE 'Ssl_server_not_after'")[0][1]
    assert after != before
    # The same server process serves the new certificate (FLUSH SSL): no restart.
    assert int(sql(member, "SHOW GLOBAL STATUS LIKE 'Uptime'")[0][1]) >= uptime
    assert replica_status(member)["Slave_IO_Running"] == "Yes"
    again = run_playbook("playbooks/tls.yml", "--limit", member, *window)
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap_changed(again) and not any(recap_changed(again).values()), again.stdout[-4000:]


# ----------------------------------------------------------------------------- endpoints (HAProxy)

PROXIES = RUNNER.get_hosts("proxies")
WRITER_PORT, READER_PORT = 6446, 6447
needs_proxy = pytest.mark.skipif(not PROXIES, reason="the inventory has no proxies group")


def server_ids():
    return {value(member, "SELECT @@server_id"): member for member in MEMBERS}


def through(port, password, ids, tries=1, user=PROBE_USER):
    """Members reached by ``tries`` new connections through the proxy port, from the control
    node, over TLS with the chain checked against the cluster CA (the proxy's IP address is not
    in the servers' certificates; its name is: see the name check below)."""
    reached = []
    for _ in range(tries):
        with pymysql.connect(host=address(PROXIES[0]), port=port, user=user,
                             password=password, connect_timeout=5, ssl_ca=str(CLUSTER_CA),
                             ssl_verify_cert=True, ssl_verify_identity=False) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT @@server_id, VARIABLE_VALUE FROM information_schema"
                               ".SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'")
                server_id, used_cipher = cursor.fetchone()
        assert used_cipher, "a connection through the proxy without TLS"
        reached.append(ids[str(server_id)])
    return reached


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def reader_pool(password, ids):
    return set(through(READER_PORT, password, ids, tries=2 * len(ALL_REPLICAS)))


@needs_proxy
def test_writer_port_reaches_the_primary_and_verifies_by_the_proxy_name(probe):
    ids = server_ids()
    assert set(through(WRITER_PORT, probe, ids, tries=4)) == {PRIMARY}
    # A client in the cluster network connecting by the proxy's name checks the certificate's name.
    result = login(ALL_REPLICAS[0], PROXIES[0], PROBE_USER, probe, f"--port={WRITER_PORT}",
                   query="SELECT @@read_only")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "0"


@needs_proxy
def test_reader_port_balances_the_replicas_and_never_the_primary(probe):
    ids = server_ids()
    reached = through(READER_PORT, probe, ids, tries=12)
    assert PRIMARY not in reached
    assert len(set(reached)) >= 2, reached


@needs_proxy
def test_a_replica_whose_replication_stops_leaves_the_reader_pool_and_returns(probe):
    ids = server_ids()
    replica = ALL_REPLICAS[0]
    wait_until(lambda: replica in reader_pool(probe, ids), 30, f"{replica} in the reader pool")
    sql(replica, "STOP SLAVE")
    stopped = time.monotonic()
    try:
        left = wait_until(lambda: replica not in reader_pool(probe, ids), 30,
                          f"{replica} out of the reader pool")
        print(f"reader pool: {replica} left {left - stopped:.1f} s after STOP SLAVE")
    finally:
        sql(replica, "START SLAVE")
    started = time.monotonic()
    back = wait_until(lambda: replica in reader_pool(probe, ids), 30,
                      f"{replica} back in the reader pool")
    print(f"reader pool: {replica} back {back - started:.1f} s after START SLAVE")


class WriterPortWatch(threading.Thread):
    """A client opening a new connection through the writer port every 0.2 s (which member it
    lands on), and asking ``new`` directly whether it is writable yet."""

    def __init__(self, new, user, password):
        super().__init__(daemon=True)
        self.new, self.user, self.password, self.ids = new, user, password, server_ids()
        self.new_address = address(new)
        self.seen, self.writable_at = [], None
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            try:
                member = through(WRITER_PORT, self.password, self.ids, user=self.user)[0]
            except pymysql.err.MySQLError:
                member = None
            self.seen.append((time.monotonic(), member))
            if self.writable_at is None and self.new_is_writable():
                self.writable_at = time.monotonic()
            time.sleep(0.2)

    def new_is_writable(self):
        try:
            with pymysql.connect(host=self.new_address, user=self.user, password=self.password,
                                 connect_timeout=5, ssl_ca=str(CLUSTER_CA)) as conn:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT @@read_only")
                    return cursor.fetchone()[0] == 0
        except pymysql.err.MySQLError:
            return False

    def finish(self, old):
        """After the switchover: the port reaches ``new`` in time; the figures, printed."""
        try:
            wait_until(lambda: self.seen and self.seen[-1][1] == self.new, 30,
                       f"writer port on {self.new}")
        finally:
            self.stop_event.set()
            self.join()
        assert {member for _, member in self.seen} <= {old, self.new, None}, self.seen
        assert self.writable_at is not None
        last_old = max((t for t, member in self.seen if member == old), default=None)
        first_new = min(t for t, member in self.seen if member == self.new
                        and (last_old is None or t > last_old))
        followed = first_new - self.writable_at
        print(f"writer port {old} -> {self.new}: reached {self.new} {followed:.1f} s after it "
              "became writable" + (f"; {first_new - last_old:.1f} s after the last connection "
                                   f"to {old}" if last_old else ""))
        assert followed < 10, f"the writer port took {followed:.1f} s to follow the primary"


@needs_proxy
@pytest.mark.skipif(os.environ.get("PROXY_SWITCHOVER_DRILL") != "1",
                    reason="PROXY_SWITCHOVER_DRILL=1 (two switchovers); the operations drills "
                    "measure the writer port during their own switchovers")
def test_writer_port_follows_a_switchover_without_a_client_change(probe, tmp_path):
    """switchover.yml to a replica and back; a client polls the writer port all along."""
    grown = tmp_path / "grown.yml"  # the late replica joined in side_effect.yml
    grown.write_text("all:\n  children:\n    mariadb:\n      children:\n        replicas:\n"
                     "          hosts:\n"
                     + "".join(f"            {name}: {{}}\n" for name in LATE_REPLICAS))
    for old, new in ((PRIMARY, ALL_REPLICAS[0]), (ALL_REPLICAS[0], PRIMARY)):
        watch = WriterPortWatch(new, PROBE_USER, probe)
        watch.start()
        result = run_playbook("playbooks/switchover.yml", "-i", str(grown),
                              "-e", f"new_primary={new}")
        assert result.returncode == 0, result.stdout[-4000:]
        watch.finish(old)


# ----------------------------------------------------------------------------- bad input


def brought_certificate(directory, *, names, days=30, expired=False):
    """A key and a certificate for ``names`` signed by the cluster CA."""
    ca_cert = x509.load_pem_x509_certificate(CLUSTER_CA.read_bytes())
    ca_key = serialization.load_pem_private_key(CLUSTER_CA.with_name("ca.key").read_bytes(),
                                                password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(days=days + 2) if expired else now
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "brought")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(ca_key, hashes.SHA256()))
    key_file, cert_file = directory / "brought.key", directory / "brought.crt"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


@pytest.mark.parametrize("case", ["other name", "expired"])
def test_a_brought_certificate_that_does_not_fit_is_refused_and_nothing_changes(case, tmp_path):
    member = ALL_REPLICAS[0]
    cert_file, key_file = brought_certificate(
        tmp_path, names=["somewhere-else"] if case == "other name" else [member],
        expired=case == "expired")
    served = host(member).check_output("sha256sum /etc/mysql/ssl/server-cert.pem")
    result = run_playbook("playbooks/tls.yml", "--limit", member,
                          "-e", f"mariadb_tls_cert_file={cert_file}",
                          "-e", f"mariadb_tls_key_file={key_file}")
    assert result.returncode != 0
    flat = " ".join(result.stdout.split())
    expected = "names neither IP:" if case == "other name" else "expired on"
    assert f"{member}: {cert_file} " in flat and expected in flat, result.stdout[-3000:]
    assert host(member).check_output("sha256sum /etc/mysql/ssl/server-cert.pem") == served


def test_a_ca_key_that_does_not_match_its_certificate_is_refused(tmp_path):
    other_key = tmp_path / "other-ca.key"
    other_key.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    result = run_playbook("playbooks/tls.yml", "-e", f"mariadb_tls_ca_cert_file={CLUSTER_CA}",
                          "-e", f"mariadb_tls_ca_key_file={other_key}")
    assert result.returncode != 0
    flat = " ".join(result.stdout.split())
    assert f"The CA {CLUSTER_CA} does not match its key {other_key}. No member was changed." \
        in flat, result.stdout[-3000:]


@needs_proxy
def test_a_proxy_that_cannot_reach_a_member_is_refused_naming_both(probe):
    member = REPLICAS[-1]  # a member in the scenario's own inventory
    host(member).check_output("systemctl stop mariadb-proxy-agent")
    try:
        # The agent play would start it again: only the proxies' play, as after a network cut.
        result = run_playbook("playbooks/proxy.yml", "--limit", PROXIES[0])
    finally:
        host(member).check_output("systemctl start mariadb-proxy-agent")
    assert result.returncode != 0
    flat = " ".join(result.stdout.split())
    assert (f"{PROXIES[0]} cannot reach the agent of {member} on port 9280" in flat
            and "HAProxy was not changed." in flat), result.stdout[-3000:]
    ids = server_ids()
    wait_until(lambda: member in reader_pool(probe, ids), 30, f"{member} back in the reader pool")
