"""`archip image upload`: store a file through the gateway, register it in Plankton."""

from __future__ import annotations

import argparse
import urllib.parse
from pathlib import Path
from typing import Any

from control.compute.credentials import token_for
from control.compute.http import Api, api_url
from control.context import get_instance

#: Container the CLI uploads images into (as kamaki's default did).
CONTAINER = "images"
#: Glance AKI/ARI: the container format names the kernel/ramdisk role too.
_CONTAINER_FORMAT = {"aki": "aki", "ari": "ari"}


def upload(args: argparse.Namespace, path: Path, name: str, disk_format: str,
           props: dict[str, str], user: str | None) -> dict[str, Any]:
    """PUT the file into the user's container ``images``, POST /images; the image record."""
    account, token = token_for(args, user)
    c = Api(api_url(get_instance(args)), token, timeout=3600)
    obj = urllib.parse.quote(name, safe="")
    c.call("PUT", f"/v1/{account}/{CONTAINER}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        c.call("PUT", f"/v1/{account}/{CONTAINER}/{obj}", data=f,  # type: ignore[arg-type]
               headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
    h = {"X-Image-Meta-Name": urllib.parse.quote(name),
         "X-Image-Meta-Location": f"pithos://{account}/{CONTAINER}/{obj}",
         "X-Image-Meta-Disk-Format": disk_format,
         "X-Image-Meta-Container-Format": _CONTAINER_FORMAT.get(disk_format, "bare")}
    for k, v in props.items():
        h[f"X-Image-Meta-Property-{k}"] = urllib.parse.quote(v, safe="=,:;.@ ")
    return dict(c.call("POST", "/image/v1.0/images", headers=h)["image"])
