"""Dataset presets: where each dataset's files live, their format, roles and shift type."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from util.typing_coerce import ConfigError, suggest


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its GitHub repository, the refs tried in order, its path there and its sha256."""

    local: str  # name under dataset/<preset>/
    repo: str  # owner/name on GitHub
    path: str  # path inside the repository (its basename is the upstream file name)
    sha256: str  # of the file itself (of the member, for a member of an archive)
    refs: tuple[str, ...]  # a pinned commit first; "HEAD" (the default branch) only where none could be pinned
    member: str = ""  # name inside the zip archive at `path` ("": `path` is the file itself)
    archive_sha256: str = ""  # sha256 of that archive (only with `member`)

    def urls(self) -> list[str]:
        """raw.githubusercontent.com addresses of the file (of its archive, for a member), one per ref."""
        return [f"https://raw.githubusercontent.com/{self.repo}/{ref}/{self.path}" for ref in self.refs]

    def upstream(self) -> str:
        """Where the file is published: repo/path, or repo/path:member for a member of an archive."""
        return f"{self.repo}/{self.path}" + (f":{self.member}" if self.member else "")


DRGO = ("user683/DRGO", ("cb213e73b209e16dabc8a9ced98c4f84ce57c9fc",))
# anzhang314/InvCF: the commits at which train.txt and valid.txt were seen (test_ood.txt there unverified),
# then the default branch; the sha256 (of the files as published) decides what is accepted.
INVCF_COAT = ("anzhang314/InvCF", ("9b85dc14dab937035ac55d5bfebe236ffcf8fd8e", "HEAD"))
INVCF_YAHOO = ("anzhang314/InvCF", ("09f9d7c965fa372c8a46bc522fd407928f193560", "HEAD"))
MACR = ("weitianxin/MACR", ("HEAD",))  # no commit could be pinned: default branch + sha256
# The baselines' own reference splits (train and test only; in distribution): fidelity checks.
DENS = ("Riwei-HEU/DENS", ("4c32d720efb040f316d1f14c39554abf93ecfd25",))
AHNS = ("Riwei-HEU/AHNS", ("735b0a75ccedbac6b0578fcc5830bebd3a7e88ac",))
REFERENCE_SPLITS = {  # preset -> (repository, folder there, sha256 of train.txt, sha256 of test.txt)
    "dens-beauty": (DENS, "DENS/data/beauty", "3232f75a7e8dfab10afc3a893cf8e0fccb9544f3fa23014504ef3874f4d1d223",
                    "67376198a2a926767be88849c32bc96abdc9b4167ad00120b8fe6e059d293902"),
    "dens-toy": (DENS, "DENS/data/toy", "886ffcd919c2d2182a99d7f8cf32e058591b9ec2dd73c62db31d527ba3965da0",
                 "49f45b6bb8e98499d043d91a370a2bc7ac09083cb2f2327349730f739893bec0"),
    "dens-baby": (DENS, "DENS/data/baby", "f3436dd517778b4902c81d8cab8ca8b841ede49c6673ac550dc7060a580921ab",
                  "10d349862f72f0b77c9f40c1579b694d90ab48ecf74d561b9f02b171cbf1088f"),
    "ahns-phone": (AHNS, "data/phone", "fce5cf288e50c3710401c17f507db293e526f5b398992c80042dbfe65cddc2e1",
                   "ba6429e11f526416cc941bd1f58b892a586641c27a1084c63e1da78eb1592724"),
    "ahns-tool": (AHNS, "data/tool", "f59f810f2aaafe20814d9f16ff193bd571dfe3c4706fd29cf5352cc419c045bb",
                  "3ba5f318520b55790e9e44a55e8dfb996328bc682a5fbb49f9a8a97a34fbc879"),
}


# IR-Benchmark (the PSL paper, Yang et al., NeurIPS 2024): popularity-shift splits published as proc.zip
# (train.tsv, test.tsv, user_list.tsv, item_list.tsv, summary.txt at its root); the id lists are not needed.
IR_BENCHMARK = ("Tiny-Snow/IR-Benchmark-Dataset", ("18bbbe892301c6013579ae70f3cab9d666878e23",))
IR_SPLITS = {  # preset -> (folder there, sha256 of proc.zip, of its train.tsv, of its test.tsv)
    "ir-cd-pop": ("data_ood/amazon2014-cd-popularity",
                  "dd87e147ad34733c49f4b117971d1f927fc331d985450a96d7aaa8ca0a95e08e",
                  "fbdb748b5bf62758b843b5ea958fb37f425fe87a5f7be64d18d2ad29b029498c",
                  "e3a60c7a77e92aed2512f5d1a9a5d2d24d8dce83ef5136110e3bfeb5e530d56e"),
    "ir-electronic-pop": ("data_ood/amazon2014-electronic-popularity",
                          "fa9c588acd1d8e3998f5ee05b259fcc0066aba1418413eb7034cb6352e49a9eb",
                          "ef9eb6cf6197c56e5a036035ed9fd96c4996f34b897c9c2b038b8b47fa9e63cc",
                          "7b455761b2b06cbf9a8803be7172d8da6c20c5622c0248c16aa025a3d8943499"),
}


def _remote(local: str, where: tuple[str, tuple[str, ...]], path: str, sha256: str) -> RemoteFile:
    return RemoteFile(local, where[0], path, sha256, where[1])


def _member(member: str, where: tuple[str, tuple[str, ...]], archive: str, archive_sha256: str,
            sha256: str) -> RemoteFile:
    """A file published inside a zip archive, saved under its own name."""
    return RemoteFile(member, where[0], archive, sha256, where[1], member=member, archive_sha256=archive_sha256)


SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "food": (
        _remote("train.txt", DRGO, "data_for_SELFRec/food/train.txt",
                "6889b3c7ac2902c40f44a227f9cd9138ceaa777631930dfa9999812d9e9bfb75"),
        _remote("valid_iid.txt", DRGO, "data_for_SELFRec/food/valid_iid.txt",
                "35955c06fae57612490d7b69a4c7619e121873dd05a66985630e7c2ed3fe61c2"),
        _remote("test_iid.txt", DRGO, "data_for_SELFRec/food/test_iid.txt",
                "de93811d88ee7c48ac88dcd44b94be6c2832de1a788a2a087466f5bbcd044d3a"),
        _remote("test_ood.txt", DRGO, "data_for_SELFRec/food/test.txt",
                "bb529628d6837ce88a91daf1aaf45314fd153ffd583090d8e41cd7d7470550e1"),
    ),
    "yelp2018": (
        _remote("train.txt", DRGO, "data_for_SELFRec/yelp2018/train.txt",
                "c60a46d7e9ff98d8480531fbba38d054ebb3758b5c9964d94992d5abe10d81a9"),
        _remote("valid_iid.txt", DRGO, "data_for_SELFRec/yelp2018/valid_iid.txt",
                "ff35042dcae460a7539d6480c2e86d8e51072113988b7806438c2c013a28feea"),
        _remote("test_iid.txt", DRGO, "data_for_SELFRec/yelp2018/test_iid.txt",
                "3e98eab701e87e4d54ecaedc8a02fc90c5adbfe71fbcdd1247ef59e113920d07"),
        _remote("test_ood.txt", DRGO, "data_for_SELFRec/yelp2018/test.txt",
                "438d4b3577564b4f17128f22ed965e8f1f867410e320f90bbeb6b86d51a93618"),
    ),
    # KuaiRec: only the paper's two test files are published (kept for reference under drgo/; their id
    # mapping is not published); the runnable split is rebuilt from the raw KuaiRec CSVs (data/kuairec.py).
    "kuairec": (
        _remote("drgo/test_iid.txt", DRGO, "data_for_SELFRec/kuaiRec/test_iid.txt",
                "c291bdda8c9b9f6f6ed5c8b9229e75babea2a388f5fe6f7089564558d08cf8b8"),
        _remote("drgo/test_ood.txt", DRGO, "data_for_SELFRec/kuaiRec/test_ood.txt",
                "9b84b51b426348276f204a681b6be6368b18ab8f84590f48c72ee4804a8c78fa"),
    ),
    "coat": (
        _remote("train.txt", INVCF_COAT, "data/coat/train.txt",
                "e6c6a8727feeeae27d09c802b12d2d4a88e52aa75e4a3fd17fab439901483d5a"),
        _remote("valid.txt", INVCF_COAT, "data/coat/valid.txt",
                "00e3d3d1a567e4ab6f3e0f7e35a849da6221afb0df767a9ce423df58938b849e"),
        _remote("test_ood.txt", INVCF_COAT, "data/coat/test_ood.txt",
                "e77d3a6af25cb0292e79a7659a075429b8df6c86559522c657e84a48bd23f685"),
    ),
    "yahoo": (
        _remote("train.txt", INVCF_YAHOO, "data/yahoo.new/train.txt",
                "cca11ae2c3baba4573a1451c8f892e1eb3d63aac4af6a2348f05ffc316ba98e6"),
        _remote("valid.txt", INVCF_YAHOO, "data/yahoo.new/valid.txt",
                "ab7c0b345cac632fd65dfe5481b34e63d5aed2d3fb1546660bd84f7796c70aac"),
        _remote("test_ood.txt", INVCF_YAHOO, "data/yahoo.new/test_ood.txt",
                "358efe3c475f09f30073c9fcb9b7032ed371d5eddf2ca94ec565c4cc6d976a86"),
    ),
    "adressa": (
        _remote("train.txt", MACR, "data/addressa/train.txt",
                "c6828d85ca310a03d287d68781e53fe61b7112851b325e72d50b432dd28c4c81"),
        _remote("test_ood.txt", MACR, "data/addressa/test.txt",
                "9f17f82e9f738bc08ae7a4c70cf3b25e685afe84f0db28152f96732224889348"),
    ),
}
SOURCES.update({
    name: (_remote("train.txt", where, f"{folder}/train.txt", train_sha),
           _remote("test.txt", where, f"{folder}/test.txt", test_sha))
    for name, (where, folder, train_sha, test_sha) in REFERENCE_SPLITS.items()
})
SOURCES.update({
    name: tuple(_member(member, IR_BENCHMARK, f"{folder}/proc.zip", zip_sha, sha)
                for member, sha in (("train.tsv", train_sha), ("test.tsv", test_sha)))
    for name, (folder, zip_sha, train_sha, test_sha) in IR_SPLITS.items()
})


@dataclass(frozen=True)
class DatasetPreset:
    """What the runner needs to know about a dataset folder under dataset/."""

    name: str
    format: str  # triples | pairs | adjacency
    train: str
    valid: Optional[str]
    tests: dict[str, str] = field(default_factory=dict)  # eval name -> file name
    shift: str = ""
    source: str = ""
    licence: str = ""
    how_to_get: str = ""  # the command that puts the files in place
    sources: tuple[RemoteFile, ...] = ()  # published files data/download.py fetches and verifies

    def files(self) -> list[str]:
        """All file names of the split, train first."""
        names = [self.train] + ([self.valid] if self.valid else []) + list(self.tests.values())
        return names


def _download(name: str) -> str:
    return f"python -m data.download {name}"


PRESETS: dict[str, DatasetPreset] = {
    p.name: dataclasses.replace(p, sources=SOURCES.get(p.name, ()))
    for p in [
        DatasetPreset(
            "synthetic", "triples", "train.txt", "valid_iid.txt",
            {"test_iid": "test_iid.txt", "test_ood": "test_ood.txt"},
            shift="exposure driven by an item-popularity confounder in training; uniform exposure in test_ood",
            source="generated by data/synthetic.py (nothing fetched)", licence="MIT (this repository)",
            how_to_get="generated automatically on first use (or: python -m data.synthetic)",
        ),
        DatasetPreset(
            "food", "triples", "train.txt", "valid_iid.txt",
            {"test_iid": "test_iid.txt", "test_ood": "test_ood.txt"},
            shift="temporal", source="GitHub user683/DRGO data_for_SELFRec/food",
            licence="none stated", how_to_get=_download("food"),
        ),
        DatasetPreset(
            "yelp2018", "triples", "train.txt", "valid_iid.txt",
            {"test_iid": "test_iid.txt", "test_ood": "test_ood.txt"},
            shift="popularity", source="GitHub user683/DRGO data_for_SELFRec/yelp2018",
            licence="none stated (Yelp dataset terms)", how_to_get=_download("yelp2018"),
        ),
        DatasetPreset(
            "kuairec", "triples", "train.txt", "valid_iid.txt",
            {"test_iid": "test_iid.txt", "test_ood": "test_ood.txt"},
            shift="exposure",
            source="rebuilt from the raw KuaiRec CSVs by data/kuairec.py (the paper's test files, GitHub "
                   "user683/DRGO data_for_SELFRec/kuaiRec, are kept under drgo/ for reference only)",
            licence="CC BY-SA 4.0 (KuaiRec)", how_to_get=_download("kuairec") + " --raw DIR_WITH_KUAIREC_CSVS",
        ),
        DatasetPreset(
            "coat", "adjacency", "train.txt", "valid.txt", {"test_ood": "test_ood.txt"},
            shift="exposure", source="GitHub anzhang314/InvCF data/coat", licence="MIT",
            how_to_get=_download("coat"),
        ),
        DatasetPreset(
            "yahoo", "adjacency", "train.txt", "valid.txt", {"test_ood": "test_ood.txt"},
            shift="exposure", source="GitHub anzhang314/InvCF data/yahoo.new",
            licence="MIT (data: Yahoo! Webscope R3, research use)", how_to_get=_download("yahoo"),
        ),
        DatasetPreset(
            "adressa", "adjacency", "train.txt", None, {"test_ood": "test_ood.txt"},
            shift="popularity", source="GitHub weitianxin/MACR data/addressa", licence="none stated",
            how_to_get=_download("adressa"),
        ),
    ] + [
        DatasetPreset(
            name, "adjacency", "train.txt", None, {"test": "test.txt"},
            shift="none (a baseline's own in-distribution split, for fidelity checks)",
            source=f"GitHub {where[0]} {folder}", licence="none stated (Amazon review data, research use)",
            how_to_get=_download(name),
        )
        for name, (where, folder, _, _) in REFERENCE_SPLITS.items()
    ] + [
        DatasetPreset(
            name, "pairs", "train.tsv", None, {"test_ood": "test.tsv"},
            shift="popularity (item-uniform test sample)",
            source=f"GitHub {IR_BENCHMARK[0]} @ {IR_BENCHMARK[1][0]} {folder}/proc.zip (IR-Benchmark, PSL paper; "
                   "no validation file: the authors report the best test epoch)",
            licence="none stated (Amazon review data, research use)", how_to_get=_download(name),
        )
        for name, (folder, _, _, _) in IR_SPLITS.items()
    ]
}


def get_preset(name: str) -> DatasetPreset:
    """Look up a preset by name; an unknown name lists the valid ones."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise ConfigError(f"dataset: unknown preset {name!r}{suggest(key, PRESETS)}; valid: {', '.join(PRESETS)}")
    return PRESETS[key]
