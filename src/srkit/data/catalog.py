"""What `srkit data download NAME` can fetch: plain data, one entry per dataset, plus groups of entries.

Every URL and checksum below was copied from a published source, named next to it (`checksum_source`).
A dataset lands in `<to>/<Dataset.folder>`; each file's archive content lands in `<folder>/<extract_to>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ArchiveType = Literal["zip", "tar", "tar.gz", "none"]

# Google Drive serves files by id; big files answer with a "can't scan for viruses" page first (download.py).
GDRIVE_DOWNLOAD = "https://drive.google.com/uc?export=download&id={id}"


def gdrive_url(file_id: str) -> str:
    """The direct-download URL of a public Google Drive file id."""
    return GDRIVE_DOWNLOAD.format(id=file_id)


@dataclass(frozen=True)
class DatasetFile:
    """One file to fetch: where from, what it must hash to, and where its content goes."""

    url: str
    filename: str  # name on disk (and on a mirror: SRKIT_DOWNLOAD_MIRROR/<filename>)
    sha256: str | None
    md5: str | None = None  # used where only an md5 was published
    size: int | None = None  # bytes, where published
    archive: ArchiveType = "none"
    extract_to: str = "."  # inside the dataset folder
    member_prefix: str = ""  # only archive members under this path are kept, with the prefix removed
    gdrive_id: str | None = None
    checksum_source: str = ""  # where the URL and checksum were published
    note: str = ""  # required when there is no checksum: why, and what the downloader does instead


@dataclass(frozen=True)
class Dataset:
    """A downloadable dataset (or one part of one): description, terms and its files."""

    description: str
    folder: str  # subfolder of the download target that holds it
    files: tuple[DatasetFile, ...]
    license: str  # terms of use and what to cite
    homepage: str = ""
    note: str = ""


@dataclass(frozen=True)
class Group:
    """A name that fetches several catalog entries, e.g. `div2k` for all four DIV2K parts."""

    description: str
    members: tuple[str, ...] = field(default_factory=tuple)


Entry = Dataset | Group

_TFDS_DIV2K = "tensorflow/datasets: tensorflow_datasets/url_checksums/div2k.txt (URL, size, sha256)"
_TFDS_CELEBA = (
    "tensorflow/datasets: tensorflow_datasets/url_checksums/celeb_a.txt (URL, size, sha256); file ids as in "
    "tensorflow_datasets/image/celeba.py and pytorch/vision torchvision/datasets/celeba.py (id, md5)"
)
_TORCHSR_BENCHMARK = "Coloquinte/torchSR: torchsr/datasets/benchmarks.py (URL, md5; no sha256 published)"

_DIV2K_LICENSE = (
    "DIV2K: for academic research only; the copyright of the images belongs to their owners. Cite Agustsson & "
    "Timofte, 'NTIRE 2017 Challenge on Single Image Super-Resolution: Dataset and Study', CVPRW 2017."
)
_DIV2K_HOME = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
_DIV2K_BASE = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"


def _div2k(filename: str, size: int, sha256: str) -> DatasetFile:
    """A DIV2K zip from the ETH server; each zip holds one top folder (e.g. DIV2K_train_HR/)."""
    return DatasetFile(
        url=_DIV2K_BASE + filename,
        filename=filename,
        sha256=sha256,
        size=size,
        archive="zip",
        checksum_source=_TFDS_DIV2K,
    )


_BENCHMARK_LICENSE = (
    "Research benchmark; images keep their original terms. EDSR's repackaging (Lim et al., 'Enhanced Deep "
    "Residual Networks for Single Image Super-Resolution', CVPRW 2017). Cite the set's own paper: {cite}."
)
_BENCHMARK_NOTE = (
    "Fetches EDSR's benchmark.tar (about 250 MB, all four benchmark sets) and keeps only this set's HR images, "
    "so `srkit evaluate --sets {name}` finds them when downloaded into <data>/benchmarks; srkit makes the LR "
    "inputs itself (MATLAB bicubic). Downloading several sets in one call (`benchmarks`) fetches the tar once."
)


def _benchmark(name: str, tar_dir: str, description: str, cite: str) -> Dataset:
    """One benchmark set's HR images out of EDSR's benchmark.tar (benchmark/<set>/HR/*.png)."""
    return Dataset(
        description=description,
        folder=name,
        files=(
            DatasetFile(
                url="https://cv.snu.ac.kr/research/EDSR/benchmark.tar",
                filename="benchmark.tar",
                sha256=None,
                md5="4ace41d33c2384b97e6b320cd0afd6ba",
                archive="tar",
                member_prefix=f"benchmark/{tar_dir}/HR/",
                checksum_source=_TORCHSR_BENCHMARK,
            ),
        ),
        license=_BENCHMARK_LICENSE.format(cite=cite),
        homepage="https://github.com/sanghyun-son/EDSR-PyTorch",
        note=_BENCHMARK_NOTE.format(name=name),
    )


CATALOG: dict[str, Entry] = {
    "div2k-train-hr": Dataset(
        description="DIV2K training set, 800 2K-resolution HR images (DIV2K/DIV2K_train_HR/0001.png ...)",
        folder="DIV2K",
        files=(
            _div2k(
                "DIV2K_train_HR.zip", 3530603713, "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335"
            ),
        ),
        license=_DIV2K_LICENSE,
        homepage=_DIV2K_HOME,
    ),
    "div2k-valid-hr": Dataset(
        description="DIV2K validation set, 100 HR images (DIV2K/DIV2K_valid_HR/0801.png ...)",
        folder="DIV2K",
        files=(
            _div2k("DIV2K_valid_HR.zip", 448993893, "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc"),
        ),
        license=_DIV2K_LICENSE,
        homepage=_DIV2K_HOME,
    ),
    "div2k-train-lr-x4": Dataset(
        description="DIV2K training set, official bicubic x4 LR (DIV2K/DIV2K_train_LR_bicubic/X4/0001x4.png ...)",
        folder="DIV2K",
        files=(
            _div2k(
                "DIV2K_train_LR_bicubic_X4.zip",
                246914039,
                "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a",
            ),
        ),
        license=_DIV2K_LICENSE,
        homepage=_DIV2K_HOME,
    ),
    "div2k-valid-lr-x4": Dataset(
        description="DIV2K validation set, official bicubic x4 LR (DIV2K/DIV2K_valid_LR_bicubic/X4/0801x4.png ...)",
        folder="DIV2K",
        files=(
            _div2k(
                "DIV2K_valid_LR_bicubic_X4.zip",
                31505881,
                "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553",
            ),
        ),
        license=_DIV2K_LICENSE,
        homepage=_DIV2K_HOME,
    ),
    "div2k": Group(
        description="DIV2K: train and valid HR plus the official bicubic x4 LR (about 4.3 GB of zips)",
        members=("div2k-train-hr", "div2k-valid-hr", "div2k-train-lr-x4", "div2k-valid-lr-x4"),
    ),
    "flickr2k": Dataset(
        description="Flickr2K, 2650 2K-resolution Flickr photos with bicubic and unknown x2/x3/x4 LR "
        "(Flickr2K/Flickr2K_HR/000001.png ...); with DIV2K it forms DF2K",
        folder="Flickr2K",
        files=(
            DatasetFile(
                url="https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar",
                filename="Flickr2K.tar",
                sha256=None,
                md5="5d3f39443d5e9489bff8963f8f26cb03",
                archive="tar",
                member_prefix="Flickr2K/",
                checksum_source="Coloquinte/torchSR: torchsr/datasets/flickr2k.py (URL, md5; no sha256 published)",
            ),
        ),
        license=(
            "Collected from Flickr by the EDSR authors; the photos keep their Flickr licences (mixed) and no "
            "further terms are published: use for research. Cite Lim et al., 'Enhanced Deep Residual Networks for "
            "Single Image Super-Resolution', CVPRW 2017, and Timofte et al., NTIRE 2017 challenge report."
        ),
        homepage="https://github.com/limbee/NTIRE2017",
        note="A single large tar (tens of GB, size not published); interrupted transfers resume.",
    ),
    "celeba": Dataset(
        description="CelebA aligned and cropped faces, 202,599 JPEGs 178x218 (CelebA/img_align_celeba/000001.jpg "
        "...), plus the official train/valid/test split list_eval_partition.txt",
        folder="CelebA",
        files=(
            DatasetFile(
                url=gdrive_url("0B7EVK8r0v71pZjFTYXZWM3FlRnM"),
                filename="img_align_celeba.zip",
                sha256="46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
                md5="00d2c5bc6d35e252742224ab0c1e8fcb",
                size=1443490838,
                archive="zip",
                gdrive_id="0B7EVK8r0v71pZjFTYXZWM3FlRnM",
                checksum_source=_TFDS_CELEBA,
            ),
            DatasetFile(
                url=gdrive_url("0B7EVK8r0v71pY0NSMzRuSXJEVkk"),
                filename="list_eval_partition.txt",
                sha256="fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7",
                md5="d32c9cbf5e040fd4025c592c306e6668",
                size=2836386,
                archive="none",
                gdrive_id="0B7EVK8r0v71pY0NSMzRuSXJEVkk",
                checksum_source=_TFDS_CELEBA,
            ),
        ),
        license=(
            "CelebA: non-commercial research and educational use only (see the CelebA agreement on the homepage). "
            "Cite Liu, Luo, Wang & Tang, 'Deep Learning Face Attributes in the Wild', ICCV 2015."
        ),
        homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        note=(
            "Hosted on Google Drive: the downloader follows Drive's 'cannot scan for viruses' confirmation page, "
            "but Drive refuses popular files for a while once their daily quota is used ('Too many users have "
            "viewed or downloaded this file recently'). Then download the file in a browser from the URL above, "
            "put it where the error message says, and run the command again: it is verified and used."
        ),
    ),
    "set5": _benchmark(
        "Set5",
        "Set5",
        "Set5, 5 HR test images (Set5/baby.png ...)",
        "Bevilacqua et al., 'Low-Complexity Single-Image Super-Resolution based on Nonnegative Neighbor "
        "Embedding', BMVC 2012",
    ),
    "set14": _benchmark(
        "Set14",
        "Set14",
        "Set14, 14 HR test images",
        "Zeyde, Elad & Protter, 'On Single Image Scale-Up Using Sparse-Representations', Curves and Surfaces 2010",
    ),
    "bsd100": _benchmark(
        "BSD100",
        "B100",
        "BSD100 (B100), the 100 test images of the Berkeley segmentation dataset BSD300",
        "Martin et al., 'A Database of Human Segmented Natural Images ...', ICCV 2001",
    ),
    "urban100": _benchmark(
        "Urban100",
        "Urban100",
        "Urban100, 100 HR images of urban scenes",
        "Huang, Singh & Ahuja, 'Single Image Super-Resolution from Transformed Self-Exemplars', CVPR 2015",
    ),
    "benchmarks": Group(
        description="Set5, Set14, BSD100 and Urban100 HR images (one 250 MB download)",
        members=("set5", "set14", "bsd100", "urban100"),
    ),
}


def resolve(name: str, catalog: Mapping[str, Entry] | None = None) -> list[tuple[str, Dataset]]:
    """The (name, Dataset) entries a name stands for (a group expands); ValueError listing known names."""
    catalog = CATALOG if catalog is None else catalog
    key = name.strip().lower()
    entry = catalog.get(key)
    if entry is None:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(catalog))}")
    if isinstance(entry, Dataset):
        return [(key, entry)]
    resolved: list[tuple[str, Dataset]] = []
    for member in entry.members:
        for item in resolve(member, catalog):
            if item[0] not in [r[0] for r in resolved]:
                resolved.append(item)
    return resolved


def describe(catalog: Mapping[str, Entry] | None = None) -> list[tuple[str, str]]:
    """(name, description) for every entry, sorted by name: what `srkit data list` would print."""
    catalog = CATALOG if catalog is None else catalog
    return [(name, catalog[name].description) for name in sorted(catalog)]
