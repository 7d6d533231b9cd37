"""`ray job submit` entrypoint for `distill-ray bench`: every stage's throughput on the cluster it runs on.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/bench.py --quick
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
