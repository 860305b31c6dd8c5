"""What pyproject.toml cannot say: the repository's top-level tasks/ folder ships inside the wheel
as harness/_tasks (harness/registry.py looks there first), while the checkout keeps tasks/ where
users know it. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["harness", "harness.*"]), "harness._tasks"],
    package_dir={"harness._tasks": "tasks"},
    # the C sources of the AVX2 kernels (quantized products, the fused decode step), compiled at first use
    # (harness/models/scratch/cpu_quant_kernel.py)
    package_data={"harness": ["py.typed"], "harness.models.scratch": ["kernels/*.c"], "harness._tasks": ["*", "**/*"]},
    exclude_package_data={"harness._tasks": ["**/__pycache__/*"]},
)
