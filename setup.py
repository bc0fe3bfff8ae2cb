from setuptools import find_packages, setup

TRAIN = [
    "torch>=2.1",  # a CPU/GPU build already installed is reused; `pip install torch==2.13.0` first on a laptop
    "transformers>=4.57,<4.58",
    "datasets>=4.0,<5",
    "accelerate>=1.0",
    "sentencepiece>=0.2",
    "protobuf",
    "numpy<2",
    "pyarrow<20",
    "rouge-score>=0.1.2",
    "sacrebleu",  # hyperdecoders/hyperformer metrics import it
    "scikit-learn",
    "scipy",
    "nltk",
    "tfrecord>=1.14",
    "tensorboard",
    "matplotlib",
    "hessian-eigenthings==1.0.0a5",  # `analyse hessian`: Lanczos, Hutchinson, SLQ (why not curvlinops: analysis/hessian.py)
]
CLUSTER = ["submitit>=1.5", "PyYAML>=6"]
TUNE = ["ray[tune]==2.60.0", "optuna==5.0.0"]  # `hyperrestart tune`: Ray Tune (ASHA, PBT), Optuna TPE via OptunaSearch
TEST = ["pytest>=8", "pytest-xdist>=3"]

setup(
    name="hyperrestart",
    version="0.1.0",
    description="Reproduce and extend 'Enhancing Language Model Hypernetworks with Restart' (NAACL 2025) "
                "as a patch-based overlay on allenai/hyperdecoders and rabeehk/hyperformer",
    python_requires=">=3.11",
    packages=find_packages(include=["hyperrestart", "hyperrestart.*"]),
    package_data={"hyperrestart.p3": ["P3_tasks.txt"], "hyperrestart.upstream": ["*.json"], "hyperrestart.report": ["*.json"]},
    install_requires=["unidiff>=0.7", "tqdm>=4"],
    extras_require={"train": TRAIN, "cluster": CLUSTER, "tune": TUNE, "test": TEST, "all": TRAIN + CLUSTER + TUNE + TEST},
    entry_points={"console_scripts": ["hyperrestart=hyperrestart.cli:console_main"]},
)
