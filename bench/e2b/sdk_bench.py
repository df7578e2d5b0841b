"""`wrenn-bench e2b`'s SDK half: times E2B's unmodified Python SDK against
wrenn (E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY in the environment) and
prints one JSON object of samples in milliseconds:

  create      Sandbox.create() until it returns (the SDK waits for nothing
              more: wrenn answers once the sandbox runs)
  run_true    sandbox.commands.run("true")
  write_1mib  sandbox.files.write of 1 MiB
  read_1mib   sandbox.files.read of that 1 MiB (format="bytes")
  run_code    run_code("1+1") on a warm kernel (with --code-interpreter)

Usage: python sdk_bench.py N [--code-interpreter]
"""

import json
import os
import sys
import time

from e2b import Sandbox


def ms(start):
    return (time.perf_counter() - start) * 1000.0


def main():
    n = int(sys.argv[1])
    code_interpreter = "--code-interpreter" in sys.argv[2:]
    out = {"create": [], "run_true": [], "write_1mib": [], "read_1mib": [], "run_code": []}
    payload = os.urandom(1 << 20)

    for _ in range(n):
        t = time.perf_counter()
        sb = Sandbox.create(timeout=120)
        out["create"].append(ms(t))
        sb.kill()

    sb = Sandbox.create(timeout=600)
    try:
        sb.commands.run("true")  # the first call opens the connection
        for _ in range(n * 4):
            t = time.perf_counter()
            r = sb.commands.run("true")
            out["run_true"].append(ms(t))
            assert r.exit_code == 0
        for i in range(n):
            t = time.perf_counter()
            sb.files.write(f"/tmp/bench-{i}.bin", payload)
            out["write_1mib"].append(ms(t))
            t = time.perf_counter()
            got = sb.files.read(f"/tmp/bench-{i}.bin", format="bytes")
            out["read_1mib"].append(ms(t))
            assert bytes(got) == payload, "read back different bytes"
    finally:
        sb.kill()

    if code_interpreter:
        from e2b_code_interpreter import Sandbox as CodeSandbox

        cs = CodeSandbox.create(timeout=600)
        try:
            assert cs.run_code("1+1").text == "2"
            for _ in range(n * 4):
                t = time.perf_counter()
                e = cs.run_code("1+1")
                out["run_code"].append(ms(t))
                assert e.text == "2", e
        finally:
            cs.kill()

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
