"""`import disttrain` must not pull in Ray or MPI: the engine runs on machines without them."""

import subprocess
import sys


def test_import_disttrain_does_not_import_ray_or_mpi():
    code = ("import disttrain, sys; "
            "assert 'ray' not in sys.modules and 'mpi4py' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mpi4py'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
