"""A local moto server (AWS API mock) on 127.0.0.1 for the AWS provisioning tests.

Only the AWS *API* is simulated: no instance ever boots, so nothing listens on SSH. All traffic
stays on 127.0.0.1: the environment built by :meth:`MotoServer.env` points boto3 at the server,
gives it fake credentials, hides the user's ~/.aws files and disables the EC2 metadata lookup
(which would otherwise try 169.254.169.254).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

# moto's fixed account id: AMIs registered through it are owned by this account.
MOTO_ACCOUNT = "123456789012"


class MotoServer:
    def __init__(self, region: str = "eu-central-1") -> None:
        self.region = region
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def __enter__(self) -> MotoServer:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def env(self, credentials: bool = True, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (ansible-playbook, ansible-inventory) using the server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_REGION=self.region,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        if credentials:
            env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        env.update(extra)
        return env

    def client(self, service: str = "ec2", region: str | None = None):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region or self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def register_ami(self, name: str) -> str:
        """Create an x86_64 Linux AMI named `name`, owned by moto's account.

        moto ships no Debian image and its register_image ignores the architecture, so one of its
        stock x86_64 Linux images is copied under the wanted name.
        """
        ec2 = self.client()
        stock = [
            image
            for image in ec2.describe_images()["Images"]
            if image.get("Architecture") == "x86_64" and "Platform" not in image
        ]
        copied = ec2.copy_image(
            SourceImageId=stock[0]["ImageId"], SourceRegion=self.region, Name=name
        )
        return copied["ImageId"]


def write_public_key(directory: Path) -> Path:
    """A syntactically valid OpenSSH ed25519 public key (EC2 only parses it, moto too)."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)
    path = directory / "id_ed25519.pub"
    path.write_text(f"ssh-ed25519 {base64.b64encode(blob).decode()} test@example\n")
    return path
