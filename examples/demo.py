"""The codetape demo (`make demo`): record, inspect, replay, diff, and browse.

1. records the orders agent with two decorators (examples/01_decorators.py);
2. records it twice in the sandbox (examples/02_sandbox_tools.py): a run whose third
   action raises, and the fixed agent's run;
3. shows the failing step, replays it in the same image from the same variables with
   the same tool answers, and diffs the two runs;
4. starts the web viewer and prints the link to the comparison (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import codetape
from codetape.viewer import url

EXAMPLES = Path(__file__).parent


def sh(*args: str, check: bool = True) -> None:
    print(f"\n$ {' '.join(args)}", flush=True)
    subprocess.run(args, check=check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=".codetape/demo", help="store directory")
    parser.add_argument("--port", default="8501", help="port of the viewer")
    parser.add_argument("--no-ui", action="store_true", help="stop before starting the viewer")
    args = parser.parse_args()
    home = str(Path(args.home).absolute())
    python, cli = sys.executable, [sys.executable, "-m", "codetape", "--home", home]

    sh(python, str(EXAMPLES / "01_decorators.py"), "--home", home)
    sh(python, str(EXAMPLES / "02_sandbox_tools.py"), "--home", home)
    sh(python, str(EXAMPLES / "02_sandbox_tools.py"), "--home", home, "--fixed")

    sandboxed = codetape.Store(home).runs(agent="orders-bot-sandbox", limit=2)
    fixed, failing = sandboxed[0].id, sandboxed[1].id
    sh(*cli, "runs")
    sh(*cli, "show", failing[:12], "--step", "2")
    sh(*cli, "replay", failing[:12], "--step", "2", check=False)
    sh(*cli, "diff", failing[:12], fixed[:12])

    comparison = url(f"http://127.0.0.1:{args.port}", a=failing, b=fixed)
    print(f"\nthe comparison in the viewer: {comparison}")
    if args.no_ui:
        return
    print("starting the viewer (Ctrl-C stops it)…", flush=True)
    os.execv(python, [*cli, "ui", "--port", args.port])


if __name__ == "__main__":
    main()
