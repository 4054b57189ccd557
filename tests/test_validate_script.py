r"""Cheap checks of ``benchmarks/gpu/validate.sh``: it parses and prints its
usage. The script itself (minutes) is not run here; ``--small`` runs it end
to end on CPU."""
import os
import os.path as osp
import shutil
import subprocess

import pytest

SCRIPT = osp.join(osp.dirname(__file__), '..', 'benchmarks', 'gpu',
                  'validate.sh')

pytestmark = pytest.mark.skipif(shutil.which('bash') is None,
                                reason='needs bash')


def test_syntax():
    subprocess.run(['bash', '-n', SCRIPT], check=True)


def test_help_prints_usage_and_runs_nothing(tmp_path):
    out = tmp_path / 'out'
    proc = subprocess.run(['bash', SCRIPT, '--help'], capture_output=True,
                          text=True, check=True,
                          env=dict(os.environ, OUT=str(out)))
    assert 'OUT=<dir> bash benchmarks/gpu/validate.sh' in proc.stdout
    assert '--small' in proc.stdout
    assert not out.exists()


def test_unknown_option_is_an_error():
    proc = subprocess.run(['bash', SCRIPT, '--bogus'], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert 'unknown option' in proc.stderr
