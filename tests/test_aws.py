"""playbooks/provision_aws.yml, playbooks/teardown_aws.yml and inventory/aws against a local moto
server (issue 5).

ansible-playbook and ansible-inventory run as subprocesses with AWS_ENDPOINT_URL pointing at a moto
server on 127.0.0.1 and fake credentials; the results are read back with boto3 from the same
server. moto simulates the EC2 API only (no instance boots), so the SSH wait is switched off with
aws_cluster_wait_for_ssh=false. The module's tests share one server and run in file order: two
clusters (alice, bob) are provisioned once, checked, re-run, scaled and finally torn down; bob has
the optional HAProxy instance from the start, alice gets one while scaled out and loses it again.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.moto_server import MOTO_ACCOUNT, MotoServer, write_public_key

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
ADMIN_CIDR = "203.0.113.7/32"
AMI_NAME = "debian-12-amd64-20250101-1999"
LIVE = ["pending", "running", "stopping", "stopped"]
CLIENT_CIDR = "198.51.100.0/24"


@dataclass
class Run:
    rc: int
    stats: dict
    failures: list[str]
    output: str

    @property
    def changed(self) -> int:
        return self.stats.get("changed", 0)


def _failures(report: dict) -> list[str]:
    messages = []
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for result in task.get("hosts", {}).values():
                if result.get("failed") and not result.get("ignore_errors"):
                    messages.append(str(result.get("msg", result)))
                    # a loop's failed items carry the messages
                    messages += [str(item["msg"]) for item in result.get("results", [])
                                 if item.get("failed") and "msg" in item]
    return messages


def run_playbook(moto: MotoServer, playbook: str, cluster: str, credentials: bool = True,
                 check: bool = False, **extra_vars) -> Run:
    env = moto.env(
        credentials=credentials,
        POS_CLUSTER_NAME=cluster,
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_PIPELINING="True",
    )
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", f"playbooks/{playbook}",
         "-e", json.dumps(extra_vars), *(["--check"] if check else [])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    try:
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        pytest.fail(f"{playbook} printed no JSON report:\n{proc.stdout}\n{proc.stderr}")
    stats = report.get("stats", {}).get("localhost", {})
    return Run(proc.returncode, stats, _failures(report), proc.stdout + proc.stderr)


def provision(moto, cluster, pubkey, **overrides) -> Run:
    extra = {
        "aws_cluster_ssh_public_key_file": str(pubkey),
        "aws_cluster_admin_cidr": ADMIN_CIDR,
        "aws_cluster_ami_owner": MOTO_ACCOUNT,
        "aws_cluster_wait_for_ssh": False,
    }
    extra.update(overrides)
    return run_playbook(moto, "provision_aws.yml", cluster, **extra)


def teardown(moto, cluster) -> Run:
    return run_playbook(moto, "teardown_aws.yml", cluster)


def inventory(moto, cluster: str) -> dict:
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", "inventory/aws", "--list"],
        cwd=REPO, env=moto.env(POS_CLUSTER_NAME=cluster, ANSIBLE_DEPRECATION_WARNINGS="0"),
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "Unable to parse" not in proc.stderr, proc.stderr
    return _plain(json.loads(proc.stdout))


def _plain(value):
    """ansible-inventory --list wraps untrusted strings as {"__ansible_unsafe": "..."}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def tag_dict(resource: dict) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def instances(ec2, cluster: str) -> list[dict]:
    pages = ec2.describe_instances(Filters=[
        {"Name": "tag:PosCluster", "Values": [cluster]},
        {"Name": "instance-state-name", "Values": LIVE},
    ])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def by_role(ec2, cluster: str) -> dict[str, list[dict]]:
    roles: dict[str, list[dict]] = {"primary": [], "replica": [], "proxy": []}
    for inst in instances(ec2, cluster):
        roles[tag_dict(inst)["PosRole"]].append(inst)
    return roles


def security_groups(ec2, cluster: str) -> list[dict]:
    return ec2.describe_security_groups(
        Filters=[{"Name": "tag:PosCluster", "Values": [cluster]}])["SecurityGroups"]


def group_named(ec2, cluster: str, name: str) -> dict:
    [group] = [g for g in security_groups(ec2, cluster) if g["GroupName"] == name]
    return group


def ingress(group: dict) -> dict:
    """(protocol, port) -> sorted sources: CIDRs and security group ids."""
    return {(p["IpProtocol"], p["FromPort"]): sorted(
                [r["CidrIp"] for r in p.get("IpRanges", [])]
                + [pair["GroupId"] for pair in p.get("UserIdGroupPairs", [])])
            for p in group["IpPermissions"]}


def assert_proxy(ec2, cluster: str, clients: list[str]):
    """One t3.micro proxy in its own group: 6446/6447 from ``clients``, 22 from the admin; the
    members' group admits it to 3306 and to the agent port 9280 (nobody else to 9280)."""
    [proxy] = by_role(ec2, cluster)["proxy"]
    tags = tag_dict(proxy)
    assert (tags["Name"], tags["ManagedBy"]) == (f"{cluster}-proxy", "mariadb-pos-ansible")
    assert proxy["InstanceType"] == "t3.micro"
    members = group_named(ec2, cluster, f"{cluster}-mariadb")
    proxies = group_named(ec2, cluster, f"{cluster}-proxy")
    assert [g["GroupId"] for g in proxy["SecurityGroups"]] == [proxies["GroupId"]]
    assert ingress(proxies) == {("tcp", 6446): clients, ("tcp", 6447): clients,
                                ("tcp", 22): [ADMIN_CIDR]}
    assert ingress(members) == {
        ("tcp", 3306): sorted([members["GroupId"], proxies["GroupId"]]),
        ("tcp", 9280): [proxies["GroupId"]], ("tcp", 22): [ADMIN_CIDR]}


def key_pairs(ec2, cluster: str) -> list[dict]:
    return ec2.describe_key_pairs(
        Filters=[{"Name": "tag:PosCluster", "Values": [cluster]}])["KeyPairs"]


def untagged_resources(ec2) -> list[str]:
    """Every live resource of the region without a PosCluster tag (moto's default SGs aside)."""
    found = []
    for kp in ec2.describe_key_pairs()["KeyPairs"]:
        if "PosCluster" not in tag_dict(kp):
            found.append(f"key pair {kp['KeyName']}")
    for sg in ec2.describe_security_groups()["SecurityGroups"]:
        if sg["GroupName"] != "default" and "PosCluster" not in tag_dict(sg):
            found.append(f"security group {sg['GroupId']}")
    reservations = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": LIVE}])["Reservations"]
    for inst in (i for r in reservations for i in r["Instances"]):
        if "PosCluster" not in tag_dict(inst):
            found.append(f"instance {inst['InstanceId']}")
    return found


@pytest.fixture(scope="module")
def moto():
    with MotoServer(region="eu-central-1") as server:
        server.register_ami(AMI_NAME)
        yield server


@pytest.fixture(scope="module")
def pubkey(tmp_path_factory):
    return write_public_key(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="module")
def clusters(moto, pubkey):
    """alice (default: 1 primary + 2 replicas) and bob (1 replica), provisioned concurrently."""
    runs = {}

    def go(name, **overrides):
        runs[name] = provision(moto, name, pubkey, **overrides)

    threads = [threading.Thread(target=go, args=("alice",)),
               threading.Thread(target=go, args=("bob",), kwargs={
                   "aws_cluster_replica_count": 1, "aws_cluster_proxy": True,
                   "aws_cluster_client_cidrs": [CLIENT_CIDR]})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, run in runs.items():
        assert run.rc == 0, f"provisioning {name} failed: {run.failures}\n{run.output[-3000:]}"
    return runs


def test_first_run_creates_three_tagged_instances(moto, clusters):
    assert clusters["alice"].changed >= 4  # key pair, security group, primary, replicas
    ec2 = moto.client()
    roles = by_role(ec2, "alice")
    assert len(roles["primary"]) == 1
    assert len(roles["replica"]) == 2
    assert roles["proxy"] == []  # the proxy is optional, off by default
    ami = ec2.describe_images(Filters=[{"Name": "name", "Values": [AMI_NAME]}])["Images"][0]
    sg = security_groups(ec2, "alice")[0]
    default_vpc = ec2.describe_vpcs(
        Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    for role, members in roles.items():
        for inst in members:
            tags = tag_dict(inst)
            assert tags["PosCluster"] == "alice"
            assert tags["PosRole"] == role
            assert tags["ManagedBy"] == "mariadb-pos-ansible"
            assert tags["Name"] == f"alice-{role}"
            assert inst["InstanceType"] == "t3.small"
            assert inst["ImageId"] == ami["ImageId"]
            assert inst["KeyName"] == "alice"
            assert inst["VpcId"] == default_vpc
            assert [g["GroupId"] for g in inst["SecurityGroups"]] == [sg["GroupId"]]
            assert inst["State"]["Name"] == "running"
            assert inst.get("PublicIpAddress")
    # bob is a separate cluster in the same account, with the proxy
    assert [len(v) for v in by_role(ec2, "bob").values()] == [1, 1, 1]
    assert_proxy(ec2, "bob", [CLIENT_CIDR])


def test_root_volumes_are_encrypted_and_sized(moto, clusters):
    ec2 = moto.client()
    ids = [i["InstanceId"] for i in instances(ec2, "alice")]
    volumes = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": ids}])["Volumes"]
    assert len(volumes) == 3
    for vol in volumes:
        assert vol["Encrypted"] is True
        assert vol["Size"] == 20
        assert vol["VolumeType"] == "gp3"


def test_security_group_opens_3306_to_itself_and_22_to_admin_only(moto, clusters):
    ec2 = moto.client()
    [sg] = security_groups(ec2, "alice")
    assert sg["GroupName"] == "alice-mariadb"
    assert tag_dict(sg)["PosCluster"] == "alice"
    rules = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): p for p in sg["IpPermissions"]}
    assert set(rules) == {("tcp", 3306, 3306), ("tcp", 22, 22)}
    mysql = rules[("tcp", 3306, 3306)]
    assert [pair["GroupId"] for pair in mysql["UserIdGroupPairs"]] == [sg["GroupId"]]
    assert not mysql.get("IpRanges") and not mysql.get("Ipv6Ranges")
    ssh = rules[("tcp", 22, 22)]
    assert [r["CidrIp"] for r in ssh["IpRanges"]] == [ADMIN_CIDR]
    assert not ssh.get("UserIdGroupPairs") and not ssh.get("Ipv6Ranges")
    # bob has its own groups; alice's does not admit bob's members or bob's proxy
    assert sg["GroupId"] not in {g["GroupId"] for g in security_groups(ec2, "bob")}


def test_key_pair_is_the_users_public_key(moto, clusters, pubkey):
    ec2 = moto.client()
    [kp] = key_pairs(ec2, "alice")
    assert kp["KeyName"] == "alice"
    assert tag_dict(kp)["ManagedBy"] == "mariadb-pos-ansible"
    described = ec2.describe_key_pairs(KeyNames=["alice"], IncludePublicKey=True)["KeyPairs"][0]
    assert described["PublicKey"].split()[:2] == pubkey.read_text().split()[:2]


def test_second_run_changes_nothing(moto, clusters, pubkey):
    ec2 = moto.client()

    def both():
        return sorted(i["InstanceId"] for i in instances(ec2, "alice") + instances(ec2, "bob"))

    before = both()
    reruns = {}
    threads = [threading.Thread(target=lambda: reruns.__setitem__("alice", provision(
                   moto, "alice", pubkey))),
               threading.Thread(target=lambda: reruns.__setitem__("bob", provision(
                   moto, "bob", pubkey, aws_cluster_replica_count=1, aws_cluster_proxy=True,
                   aws_cluster_client_cidrs=[CLIENT_CIDR])))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rerun in reruns.values():
        assert rerun.rc == 0, rerun.failures
        assert rerun.changed == 0, rerun.output[-4000:]
    assert both() == before
    assert untagged_resources(ec2) == []


def test_inventory_groups_primary_and_replicas_by_tags(moto, clusters):
    ec2 = moto.client()
    for cluster, replicas in (("alice", 2), ("bob", 1)):
        inv = inventory(moto, cluster)
        roles = by_role(ec2, cluster)
        dns = {role: sorted(i["PrivateDnsName"] for i in members)
               for role, members in roles.items()}
        assert sorted(inv["primary"]["hosts"]) == dns["primary"]
        assert len(inv["primary"]["hosts"]) == 1
        assert sorted(inv["replicas"]["hosts"]) == dns["replica"]
        assert len(dns["replica"]) == replicas
        assert sorted(inv["mariadb"]["children"]) == ["primary", "replicas"]
        assert sorted(inv.get("proxies", {}).get("hosts", [])) == sorted(
            i["PrivateDnsName"] for i in roles["proxy"])
        assert len(roles["proxy"]) == (cluster == "bob")
        hostvars = inv["_meta"]["hostvars"]
        for inst in roles["primary"] + roles["replica"] + roles["proxy"]:
            hv = hostvars[inst["PrivateDnsName"]]
            assert hv["ansible_host"] == inst["PublicIpAddress"]
            assert hv["mariadb_replication_address"] == inst["PrivateIpAddress"]
            assert hv["ansible_user"] == "admin"


def test_inventory_without_cluster_name_lists_nothing(moto, clusters):
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", "inventory/aws", "--list"],
        cwd=REPO, env=moto.env(POS_CLUSTER_NAME=""), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert "POS_CLUSTER_NAME is not set" in proc.stderr
    assert "hosts" not in json.dumps(json.loads(proc.stdout).get("primary", {}))


def test_scale_out_to_three_replicas_and_back(moto, clusters, pubkey):
    ec2 = moto.client()
    original = by_role(ec2, "alice")
    original_replicas = {i["InstanceId"] for i in original["replica"]}

    # ... and the proxy switched on, its clients by default the VPC's own network
    out = provision(moto, "alice", pubkey, aws_cluster_replica_count=3, aws_cluster_proxy=True)
    assert out.rc == 0, out.failures
    assert out.changed >= 1
    scaled = by_role(ec2, "alice")
    assert len(scaled["replica"]) == 3
    vpc_cidr = ec2.describe_vpcs(VpcIds=[scaled["proxy"][0]["VpcId"]])["Vpcs"][0]["CidrBlock"]
    assert_proxy(ec2, "alice", [vpc_cidr])
    assert original_replicas < {i["InstanceId"] for i in scaled["replica"]}
    assert scaled["primary"][0]["InstanceId"] == original["primary"][0]["InstanceId"]
    assert len(inventory(moto, "alice")["replicas"]["hosts"]) == 3

    # back, and the proxy switched off: instance and group gone, the members' rules as before
    back = provision(moto, "alice", pubkey, aws_cluster_replica_count=2)
    assert back.rc == 0, back.failures
    assert back.changed >= 1
    after = by_role(ec2, "alice")
    assert after["proxy"] == []
    [members] = security_groups(ec2, "alice")
    assert ingress(members) == {("tcp", 3306): [members["GroupId"]], ("tcp", 22): [ADMIN_CIDR]}
    # the newest replica goes; the two that have been replicating longest stay
    assert {i["InstanceId"] for i in after["replica"]} == original_replicas
    assert after["primary"][0]["InstanceId"] == original["primary"][0]["InstanceId"]
    assert untagged_resources(ec2) == []


BAD_INPUTS = [
    pytest.param(({"aws_cluster_ssh_public_key_file": "/nonexistent/id_ed25519.pub"}, True,
                 "SSH public key file /nonexistent/id_ed25519.pub does not exist"), id="no-pubkey"),
    pytest.param(({"aws_cluster_region": "eu-mars-1"}, True,
                 "AWS region 'eu-mars-1' is unknown or not enabled"), id="unknown-region"),
    pytest.param(({"aws_cluster_region": "Frankfurt"}, True,
                 "aws_cluster_region 'Frankfurt' is not an AWS region name"), id="bad-region"),
    pytest.param(({"aws_cluster_replica_count": 0}, True,
                 "needs at least 1 replica"), id="zero-replicas"),
    pytest.param(({"aws_cluster_ami_name": "debian-99-*"}, True,
                 "No AMI named 'debian-99-*' owned by 123456789012"), id="no-ami"),
    pytest.param(({}, False, "No AWS credentials found"), id="no-credentials"),
    pytest.param(({"aws_cluster_admin_cidr": ""}, True,
                 "aws_cluster_admin_cidr '' is not an IPv4 CIDR"), id="no-admin-cidr"),
    pytest.param(({"aws_cluster_proxy": True, "aws_cluster_client_cidrs": ["10.0.0.0/33"]}, True,
                 "aws_cluster_client_cidrs entry '10.0.0.0/33' is not an IPv4 CIDR"),
                 id="bad-client-cidr"),
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_clearly_and_creates_nothing(moto, clusters, pubkey, case):
    overrides, credentials, message = case
    cluster = "broken"
    extra = {
        "aws_cluster_ssh_public_key_file": str(pubkey),
        "aws_cluster_admin_cidr": ADMIN_CIDR,
        "aws_cluster_ami_owner": MOTO_ACCOUNT,
        "aws_cluster_wait_for_ssh": False,
        **overrides,
    }
    run = run_playbook(moto, "provision_aws.yml", cluster, credentials=credentials, **extra)
    assert run.rc != 0
    assert any(message in f for f in run.failures), run.failures
    assert not any("Traceback" in f for f in run.failures)
    ec2 = moto.client()
    assert instances(ec2, cluster) == []
    assert security_groups(ec2, cluster) == []
    assert key_pairs(ec2, cluster) == []
    assert not [k for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"] == cluster]
    assert untagged_resources(ec2) == []


def test_check_mode_on_a_new_cluster_creates_nothing(moto, clusters, pubkey):
    ec2 = moto.client()
    run = run_playbook(moto, "provision_aws.yml", "dave", check=True,
                       aws_cluster_ssh_public_key_file=str(pubkey),
                       aws_cluster_admin_cidr=ADMIN_CIDR, aws_cluster_ami_owner=MOTO_ACCOUNT,
                       aws_cluster_wait_for_ssh=False, aws_cluster_proxy=True)
    assert run.rc == 0, run.failures
    assert run.changed >= 4  # key pair, both security groups, instances would be created
    assert instances(ec2, "dave") == []
    assert security_groups(ec2, "dave") == [] and key_pairs(ec2, "dave") == []
    assert untagged_resources(ec2) == []


def test_foreign_key_pair_of_the_same_name_is_not_taken_over(moto, clusters, pubkey):
    ec2 = moto.client()
    ec2.import_key_pair(KeyName="carol", PublicKeyMaterial=pubkey.read_bytes())
    try:
        run = provision(moto, "carol", pubkey)
        assert run.rc != 0
        assert any("Key pair 'carol' already exists" in f for f in run.failures), run.failures
        assert instances(ec2, "carol") == [] and security_groups(ec2, "carol") == []
        assert tag_dict(ec2.describe_key_pairs(KeyNames=["carol"])["KeyPairs"][0]) == {}
    finally:
        ec2.delete_key_pair(KeyName="carol")


def test_teardown_removes_only_this_clusters_resources(moto, clusters):
    ec2 = moto.client()
    bob_before = sorted(i["InstanceId"] for i in instances(ec2, "bob"))

    down = teardown(moto, "alice")
    assert down.rc == 0, down.failures
    assert down.changed >= 3
    assert instances(ec2, "alice") == []
    assert security_groups(ec2, "alice") == []
    assert key_pairs(ec2, "alice") == []
    assert ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["alice-mariadb"]}])["SecurityGroups"] == []
    assert inventory(moto, "alice").get("primary", {}).get("hosts", []) == []
    # bob's cluster is untouched
    assert sorted(i["InstanceId"] for i in instances(ec2, "bob")) == bob_before
    assert len(security_groups(ec2, "bob")) == 2 and len(key_pairs(ec2, "bob")) == 1  # + proxy

    # a second teardown of alice changes nothing; bob goes at the same time
    runs = {}
    threads = [threading.Thread(target=lambda n=n: runs.__setitem__(n, teardown(moto, n)))
               for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again, gone = runs["alice"], runs["bob"]
    assert again.rc == 0, again.failures
    assert again.changed == 0
    assert gone.rc == 0, gone.failures
    assert gone.changed >= 3
    assert instances(ec2, "bob") == [] and security_groups(ec2, "bob") == []
    assert key_pairs(ec2, "bob") == []
    assert untagged_resources(ec2) == []


def test_proxy_ports_are_the_proxy_roles():
    """The ports the security groups open are the ones HAProxy and the agents use."""
    aws = yaml.safe_load((REPO / "roles/aws_cluster/defaults/main.yml").read_text())
    proxy = yaml.safe_load((REPO / "roles/mariadb_proxy/defaults/main.yml").read_text())
    assert aws["aws_cluster_proxy_ports"] == [proxy["mariadb_proxy_writer_port"],
                                              proxy["mariadb_proxy_reader_port"]]
    assert aws["aws_cluster_proxy_agent_port"] == proxy["mariadb_proxy_agent_port"]
