# Packaging for pyg-gat-ext. This file never imports torch: `pip install .`
# builds a pure-Python wheel under build isolation without downloading torch.
import os.path as osp

from setuptools import find_packages, setup

here = osp.dirname(osp.abspath(__file__))
with open(osp.join(here, 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

# The releases the package is tested with: torch 2.13 in CI, 2.11 on the
# GPU machine; PyG 2.8.x. A newer torch or PyG is admitted once it is tested.
install_requires = [
    'torch>=2.11,<2.14',
    'torch-geometric>=2.8.0,<2.9',
    # Builds the C++ CPU kernels on first use (torch.utils.cpp_extension);
    # a C++ compiler is needed too, and is not a Python package.
    'ninja',
]

viz_requires = ['matplotlib', 'networkx']

extras_require = {
    # `SparseTensor` inputs; build from source with
    # `pip install --no-build-isolation torch-scatter torch-sparse`.
    'sparse': ['torch-scatter', 'torch-sparse'],
    # Triton is not listed: it is paired with each torch build. CI installs
    # one to run the Triton kernels under TRITON_INTERPRET=1 on CPU.
    # pyg_gat_ext.visualize's plots and the example's --plot.
    'viz': viz_requires,
    # scipy: PyG's Planetoid loader unpickles scipy matrices (examples);
    # nbclient, nbformat and ipykernel execute the example notebook; tqdm
    # draws the example's progress bar.
    'test': ['pytest', 'hypothesis', 'scipy', 'tqdm', 'nbclient', 'nbformat',
             'ipykernel'] + viz_requires,
    'docs': ['sphinx'],  # python -m sphinx -W -b html docs docs/_build/html
}

setup(
    name='pyg-gat-ext',
    version='0.1.0',
    description=('A drop-in GATConv for PyTorch Geometric: exact, faster and '
                 'lighter on memory'),
    long_description=long_description,
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    install_requires=install_requires,
    extras_require=extras_require,
    packages=find_packages(include=['pyg_gat_ext', 'pyg_gat_ext.*']),
    # The C++ kernels ship as sources, compiled on first use (never here).
    package_data={'pyg_gat_ext': ['csrc/*.cpp', 'csrc/*.h']},
    license='MIT',
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
