"""`ray job submit` entrypoint for the EKT experiment (`distill-ray experiment`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/ekt.py --config configs/ekt.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["experiment", *sys.argv[1:]]))
