"""Regenerate the checked-in protobuf/gRPC modules from kastor.proto.

The generated modules are committed so that installing Kastor needs no compiler; run
this (it needs grpcio-tools, the `dev` extra) after editing the .proto file.
"""

import pathlib
import shutil
import tempfile

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Lay the proto out under its import path so generated imports read
        # `from kastor.runtime.protocol import kastor_pb2`.
        pkg = pathlib.Path(tmp, "kastor", "runtime", "protocol")
        pkg.mkdir(parents=True)
        shutil.copy(HERE / "kastor.proto", pkg / "kastor.proto")
        rc = protoc.main(["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                          f"--grpc_python_out={tmp}", str(pkg / "kastor.proto")])
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        for name in ("kastor_pb2.py", "kastor_pb2.pyi", "kastor_pb2_grpc.py"):
            shutil.copy(pkg / name, HERE / name)


if __name__ == "__main__":
    main()
