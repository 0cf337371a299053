"""Verification benchmark loaders: insightface .bin, LFW pairs.txt, identity folders, dispatch."""

from __future__ import annotations

import codecs
import logging
import os
import pickle
import struct
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf
from skimage import data as skimage_data

from fiqa.config.evaluation import benchmark_spec
from fiqa.config.typed import ConfigError
from fiqa.core.images import ImageReadError
from fiqa.core.pairs import Pairs, _sample_impostor_pairs, all_pairs
from fiqa.data.verification import (
    VerificationBenchmark,
    load_benchmark,
    load_bin,
    load_identity_folder,
    load_pairs_txt,
)


@pytest.fixture(scope="module")
def face_jpegs() -> list[np.ndarray]:
    """Eight distinct 112x112 JPEG crops around the astronaut's face (cv2.imencode output)."""
    astronaut = skimage_data.astronaut()
    crops = []
    for k in range(8):
        face = cv2.resize(
            astronaut[20 + 6 * k : 220 + 6 * k, 140 + 5 * k : 340 + 5 * k], (112, 112)
        )
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
        assert ok
        crops.append(encoded)
    return crops


def _write_bin(path: Path, content: object, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


# --- insightface .bin ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_load_bin_reads_bytes_and_array_entries_as_consecutive_pairs(
    tmp_path: Path, face_jpegs: list[np.ndarray], protocol: int
) -> None:
    # Even images stored as bytes, odd ones as uint8 arrays (both occur in the wild); numpy
    # bools in issame exercise the numpy scalar path (and _codecs.encode under protocol 2).
    bins = [enc.tobytes() if i % 2 == 0 else enc for i, enc in enumerate(face_jpegs[:6])]
    issame = [np.bool_(True), np.bool_(False), np.bool_(True)]
    path = _write_bin(tmp_path / "toy.bin", (bins, issame), protocol)

    bench = load_bin(path)

    assert bench.name == "toy"
    assert bench.aligned is True
    assert bench.identities is None
    assert len(bench.images) == 6
    assert bench.paths == [f"toy.bin#{i}" for i in range(6)]
    assert bench.pairs.a.tolist() == [0, 2, 4]
    assert bench.pairs.b.tolist() == [1, 3, 5]
    assert bench.pairs.genuine.tolist() == [True, False, True]
    for i in range(6):
        image = bench.images.load(i)
        expected = cv2.cvtColor(cv2.imdecode(face_jpegs[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert image.dtype == np.uint8 and image.shape == (112, 112, 3)
        np.testing.assert_array_equal(image, expected)


def _python2_pickle(bins: list[bytes], issame: list[bool], array_bytes: bytes) -> bytes:
    """Protocol-2 opcodes as Python 2 wrote the original lfw.bin: images as ``str`` (BINSTRING),
    plus one image stored as a numpy uint8 array the way Python 2 numpy pickled it."""

    def string(data: bytes) -> bytes:
        return b"T" + struct.pack("<i", len(data)) + data

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b")
        + b"\x87R(K\x01" + b"J" + struct.pack("<i", len(array_bytes)) + b"\x85"
        + b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R(K\x03" + string(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + string(array_bytes) + b"tb"
    )  # fmt: skip
    images = b"".join(string(data) for data in bins) + array
    flags = b"".join(b"\x88" if flag else b"\x89" for flag in issame)
    return b"\x80\x02(](" + images + b"e](" + flags + b"et."


def test_load_bin_reads_a_python2_pickle(tmp_path: Path, face_jpegs: list[np.ndarray]) -> None:
    raw = [enc.tobytes() for enc in face_jpegs[:4]]
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(_python2_pickle(raw[:3], [False, True], array_bytes=raw[3]))

    bench = load_bin(path)

    assert bench.pairs.genuine.tolist() == [False, True]
    assert bench.images.blobs == raw  # the array entry became the same bytes
    assert bench.images.load(3).shape == (112, 112, 3)


def test_load_bin_decodes_lazily_names_bad_images_and_pickles(
    tmp_path: Path, face_jpegs: list[np.ndarray]
) -> None:
    bins = [face_jpegs[0].tobytes(), b"not an image at all"]
    bench = load_bin(_write_bin(tmp_path / "lfw.bin", (bins, [True])), name="LFW")

    assert bench.name == "LFW"  # loading succeeded: nothing was decoded yet
    with pytest.raises(ImageReadError, match=r"lfw\.bin#1") as info:
        bench.images.load(1)
    assert info.value.reason == "not_an_image"
    # DataLoader workers receive the source by pickling.
    clone = pickle.loads(pickle.dumps(bench.images))
    np.testing.assert_array_equal(clone.load(0), bench.images.load(0))


@pytest.mark.parametrize(
    ("n_bins", "n_flags", "message"),
    [(5, 2, "5 images for 2 pairs"), (6, 2, "6 images for 2 pairs"), (4, 3, "4 images for 3")],
)
def test_load_bin_rejects_image_count_not_twice_the_flags(
    tmp_path: Path, face_jpegs: list[np.ndarray], n_bins: int, n_flags: int, message: str
) -> None:
    bins = [enc.tobytes() for enc in face_jpegs[:n_bins]]
    path = _write_bin(tmp_path / "cfp_fp.bin", (bins, [True] * n_flags))
    with pytest.raises(ValueError, match=f"cfp_fp.bin.*{message}"):
        load_bin(path)


@pytest.mark.parametrize(
    "content",
    [[b"a", b"b", b"c"], ([b"a", b"b"], [True], [1]), ([b"a", 3], [True]), ([b"a", b"b"], ["x"])],
    ids=["not-a-pair", "three-parts", "int-image", "string-flags"],
)
def test_load_bin_rejects_unexpected_structure(tmp_path: Path, content: object) -> None:
    with pytest.raises(ValueError, match=r"odd\.bin"):
        load_bin(_write_bin(tmp_path / "odd.bin", content))


def test_load_bin_rejects_a_file_that_is_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(ValueError, match=r"garbage\.bin is not a readable insightface \.bin"):
        load_bin(path)
    with pytest.raises(FileNotFoundError):
        load_bin(tmp_path / "absent.bin")


class _RunsCommand:
    """Unpickling this would run a shell command (the classic pickle attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _EvaluatesCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("__import__('os').getcwd()",))


class _DecodesRot13:
    """``codecs.encode`` pickles as ``_codecs.encode``: only its latin-1 use is allowed."""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (codecs.encode, ("abc", "rot13"))


@pytest.mark.parametrize(
    ("payload", "named"),
    [("system", r"global \w+\.system"), ("eval", "builtins.eval"), ("rot13", "'rot13'")],
)
def test_load_bin_refuses_pickles_that_call_forbidden_globals(
    tmp_path: Path, payload: str, named: str
) -> None:
    marker = tmp_path / "pwned"
    evil = {"system": _RunsCommand(marker), "eval": _EvaluatesCode(), "rot13": _DecodesRot13()}
    path = _write_bin(tmp_path / "evil.bin", ([evil[payload], b"x"], [True]))

    with pytest.raises(ValueError, match=rf"evil\.bin.*refusing.*{named}"):
        load_bin(path)

    assert not marker.exists()


# --- LFW pairs.txt -------------------------------------------------------------------------------


def _write_image(path: Path, seed: int, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)


@pytest.fixture
def lfw_root(tmp_path: Path) -> Path:
    """Alice 1-3 and 5, Bob 1-2, Carol 1 (Alice 4 and Dave are referenced but absent)."""
    root = tmp_path / "lfw"
    for seed, (person, number) in enumerate(
        [
            ("Alice", 1),
            ("Alice", 2),
            ("Alice", 3),
            ("Alice", 5),
            ("Bob", 1),
            ("Bob", 2),
            ("Carol", 1),
        ]
    ):
        _write_image(root / person / f"{person}_{number:04d}.jpg", seed)
    return root


def test_load_pairs_txt_reads_both_line_kinds_and_drops_missing(
    tmp_path: Path, lfw_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text(
        "1\t3\n"
        "Alice\t1\t2\n"
        "Bob 1 2\n"
        "Alice\t1\t4\n"  # Alice_0004 is missing
        "Alice\t3\tBob\t1\n"
        "Bob  2   Carol\t1\n"
        "Carol\t1\tDave\t1\n"  # Dave is missing
        "\n"
    )
    with caplog.at_level(logging.WARNING, logger="fiqa.data.verification"):
        bench = load_pairs_txt(pairs_txt, lfw_root)

    assert bench.name == "lfw"
    assert bench.aligned is False
    # Only images of kept pairs, sorted; Alice_0005 is on disk but in no pair.
    assert bench.paths == [
        "Alice/Alice_0001.jpg",
        "Alice/Alice_0002.jpg",
        "Alice/Alice_0003.jpg",
        "Bob/Bob_0001.jpg",
        "Bob/Bob_0002.jpg",
        "Carol/Carol_0001.jpg",
    ]
    assert bench.identities == ["Alice", "Alice", "Alice", "Bob", "Bob", "Carol"]
    assert list(zip(bench.pairs.a.tolist(), bench.pairs.b.tolist(), strict=True)) == [
        (0, 1),
        (3, 4),
        (2, 3),
        (4, 5),
    ]
    assert bench.pairs.genuine.tolist() == [True, True, False, False]
    assert bench.missing == ["Alice/Alice_0004.jpg", "Dave/Dave_0001.jpg"]
    assert "2 pairs dropped" in caplog.text
    assert bench.images.load(5).shape == (24, 24, 3)


def test_load_pairs_txt_without_header_and_other_extension(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    for seed, number in enumerate((1, 2)):
        _write_image(root / "Eve" / f"Eve_{number:04d}.png", seed)
    _write_image(root / "Zed" / "Zed_0007.png", 9)
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("Eve 1 2\nEve 2 Zed 7\n")

    bench = load_pairs_txt(pairs_txt, root, name="custom", ext=".png")

    assert bench.name == "custom"
    assert bench.paths == ["Eve/Eve_0001.png", "Eve/Eve_0002.png", "Zed/Zed_0007.png"]
    assert bench.pairs.genuine.tolist() == [True, False]
    assert bench.missing == []


def test_load_pairs_txt_names_the_bad_line(tmp_path: Path, lfw_root: Path) -> None:
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("10\t300\nAlice\t1\t2\nAlice 1 Bob 2 3\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:3: .*5 fields"):
        load_pairs_txt(pairs_txt, lfw_root)
    pairs_txt.write_text("Alice\tone\t2\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:1: "):
        load_pairs_txt(pairs_txt, lfw_root)


def test_load_pairs_txt_with_no_image_found_says_to_check_the_root(
    tmp_path: Path, lfw_root: Path
) -> None:
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("1\nAlice\t1\t2\n")
    with pytest.raises(ValueError, match="no pair has both images"):
        load_pairs_txt(pairs_txt, lfw_root, ext=".png")


def test_load_pairs_txt_names_the_file_and_line_of_non_utf8_bytes(
    tmp_path: Path, lfw_root: Path
) -> None:
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_bytes("1\t1\nAlice\t1\t2\nJos\u00e9\t1\t2\n".encode("latin1"))
    with pytest.raises(ValueError, match=r"pairs\.txt:3: not UTF-8 text \(byte 0xe9"):
        load_pairs_txt(pairs_txt, lfw_root)
    pairs_txt.write_bytes(codecs.BOM_UTF8 + b"1\t1\nAlice\t1\t2\n")  # a BOM is no header
    assert load_pairs_txt(pairs_txt, lfw_root).pairs.genuine.tolist() == [True]


def test_load_benchmark_table_names_a_non_utf8_table(tmp_path: Path) -> None:
    table = tmp_path / "identities.csv"
    table.write_bytes("path,identity\nJos\u00e9/1.jpg,Jos\u00e9\n".encode("latin1"))
    with pytest.raises(ValueError, match=r"identities\.csv: not UTF-8 text"):
        load_benchmark(benchmark_spec({"format": "table", "root": str(tmp_path),
                                       "table": str(table)}, "eval.benchmark"))  # fmt: skip


# --- identity folders ----------------------------------------------------------------------------

FOLDER_SIZES = {"id_a": 3, "id_b": 1, "id_c": 4, "id_d": 2}  # 10 images, 10 genuine, 35 impostor


@pytest.fixture
def identity_root(tmp_path: Path) -> Path:
    root = tmp_path / "people"
    for k, (identity, count) in enumerate(FOLDER_SIZES.items()):
        for i in range(count):
            _write_image(root / identity / f"{i}.png", seed=10 * k + i, size=16)
    return root


def _pair_set(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(a.tolist(), b.tolist(), strict=True))


def test_identity_folder_has_all_genuine_and_exactly_the_sampled_impostors(
    identity_root: Path,
) -> None:
    bench = load_identity_folder(identity_root, impostors=20, seed=3)

    ids = np.asarray(bench.identities)
    genuine, a, b = bench.pairs.genuine, bench.pairs.a, bench.pairs.b
    assert bench.name == "people" and bench.aligned is False
    assert len(bench.images) == 10 and bench.paths[0] == "id_a/0.png"
    assert bench.pairs.n_genuine == sum(n * (n - 1) // 2 for n in FOLDER_SIZES.values()) == 10
    assert bench.pairs.n_impostor == 20
    assert (a < b).all()
    assert len(_pair_set(a, b)) == len(bench.pairs)  # no duplicates
    assert (ids[a[genuine]] == ids[b[genuine]]).all()
    assert (ids[a[~genuine]] != ids[b[~genuine]]).all()
    expected_genuine = {(i, j) for i, j in combinations(range(10), 2) if ids[i] == ids[j]}
    assert _pair_set(a[genuine], b[genuine]) == expected_genuine
    assert pickle.loads(pickle.dumps(bench.images)).load(9).shape == (16, 16, 3)


def test_identity_folder_takes_every_impostor_pair_when_fewer_exist(identity_root: Path) -> None:
    bench = load_identity_folder(identity_root, impostors=1000)

    reference = all_pairs(bench.identities)
    impostor = ~bench.pairs.genuine
    assert bench.pairs.n_impostor == reference.n_impostor == 35
    assert _pair_set(bench.pairs.a[impostor], bench.pairs.b[impostor]) == _pair_set(
        reference.a[~reference.genuine], reference.b[~reference.genuine]
    )
    assert load_identity_folder(identity_root, impostors=0).pairs.n_impostor == 0


def test_identity_folder_impostor_sample_follows_the_seed(identity_root: Path) -> None:
    first = load_identity_folder(identity_root, impostors=12, seed=7).pairs
    again = load_identity_folder(identity_root, impostors=12, seed=7).pairs
    other = load_identity_folder(identity_root, impostors=12, seed=8).pairs

    np.testing.assert_array_equal(first.a, again.a)
    np.testing.assert_array_equal(first.b, again.b)
    assert _pair_set(first.a, first.b) != _pair_set(other.a, other.b)


def test_impostor_sampling_covers_pairs_uniformly() -> None:
    group_end = np.repeat([3, 4, 8, 10], [3, 1, 4, 2])  # FOLDER_SIZES as sorted blocks
    counts: dict[tuple[int, int], int] = {}
    for seed in range(700):
        a, b = _sample_impostor_pairs(group_end, 5, np.random.default_rng(seed))
        for pair in zip(a.tolist(), b.tolist(), strict=True):
            counts[pair] = counts.get(pair, 0) + 1
    assert len(counts) == 35
    assert min(counts.values()) > 60 and max(counts.values()) < 140  # expected 700 * 5 / 35 = 100


def test_impostor_sampling_scales_without_an_n_by_n_matrix() -> None:
    # 200 000 images in 1 000 identities: ~2e10 cross pairs, never materialised.
    group_end = np.repeat(np.arange(200, 200_001, 200), 200)
    a, b = _sample_impostor_pairs(group_end, 10_000, np.random.default_rng(0))

    assert a.size == 10_000 and len(_pair_set(a, b)) == 10_000
    assert (a < b).all() and (a // 200 != b // 200).all()


def test_identity_folder_skips_odd_entries_with_a_warning(
    identity_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = load_identity_folder(identity_root, impostors=5).paths
    os.symlink("loop.jpg", identity_root / "id_a" / "loop.jpg")  # points at itself
    os.symlink("gone.png", identity_root / "id_b" / "dangling.png")
    (identity_root / "stray.jpg").write_bytes(b"an image outside any identity folder")
    (identity_root / "README.txt").write_text("beside the dataset: not listed, not a failure")
    with caplog.at_level(logging.WARNING, logger="fiqa.data.folder"):
        bench = load_identity_folder(identity_root, impostors=5)
    assert bench.paths == expected
    assert "3 entries are not <identity>/<file> images" in caplog.text
    assert "outside_identity_folder" in caplog.text and "README.txt" not in caplog.text
    assert "symlink_loop" in caplog.text and "dangling_link" in caplog.text


def test_identity_folder_rejects_empty_missing_and_negative(tmp_path: Path) -> None:
    empty = tmp_path / "empty_set"
    (empty / "someone").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty_set"):
        load_identity_folder(empty)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_identity_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="impostors"):
        load_identity_folder(empty, impostors=-1)


def test_benchmark_rejects_pairs_outside_its_images(identity_root: Path) -> None:
    bench = load_identity_folder(identity_root, impostors=0)
    with pytest.raises(ValueError, match="outside its 10 images"):
        VerificationBenchmark(
            "bad", bench.images, Pairs([0], [10], [True]), False, None, bench.paths
        )
    with pytest.raises(ValueError, match="paths/identities"):
        VerificationBenchmark("bad", bench.images, bench.pairs, False, None, bench.paths[:-1])


# --- config dispatch -----------------------------------------------------------------------------


def test_load_benchmark_dispatches_on_format(
    tmp_path: Path, face_jpegs: list[np.ndarray], lfw_root: Path, identity_root: Path
) -> None:
    bin_path = _write_bin(tmp_path / "agedb_30.bin", ([e.tobytes() for e in face_jpegs[:2]], [0]))
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("Alice 1 2\nAlice 1 Bob 1\n")

    from_bin = load_benchmark(benchmark_spec({"format": "bin", "path": str(bin_path)}, "b"))
    from_txt = load_benchmark(
        benchmark_spec(
            OmegaConf.create(
                {"format": "pairs_txt", "path": str(pairs_txt), "images_root": str(lfw_root)}
            ),
            "b",
        )
    )
    from_folder = load_benchmark(benchmark_spec(
        {"format": "folder", "root": identity_root, "impostors": 4, "seed": 1, "name": "mine"},
        "b"))  # fmt: skip

    assert (from_bin.name, from_bin.aligned, len(from_bin.pairs)) == ("agedb_30", True, 1)
    assert from_bin.pairs.genuine.tolist() == [False]
    assert (from_txt.name, len(from_txt.pairs)) == ("lfw", 2)
    assert (from_folder.name, from_folder.pairs.n_impostor) == ("mine", 4)


def test_load_benchmark_errors_list_formats_and_name_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"'csv'.*'bin', 'pairs_txt', 'folder'"):
        load_benchmark({"format": "csv", "path": "x.csv"})
    with pytest.raises(ValueError, match="unknown benchmark format None"):
        load_benchmark({"path": "x.bin"})
    with pytest.raises(ValueError, match="'images_root'"):
        load_benchmark({"format": "pairs_txt", "path": "pairs.txt", "ext": ".jpg"})
    with pytest.raises(ValueError, match="'root'"):
        load_benchmark({"format": "folder", "impostors": 10, "seed": 0})
    # Entries of a config are completed from their format's YAML, which names what is missing.
    with pytest.raises(ConfigError, match=r"eval.benchmarks\[1\] \(table\): keys missing: root"):
        benchmark_spec({"format": "table", "table": "ids.csv"}, "eval.benchmarks[1]")
    with pytest.raises(ConfigError, match=r"b.format='csv'; choose one of bin, folder"):
        benchmark_spec({"format": "csv"}, "b")
    spec = benchmark_spec({"format": "folder", "root": "faces"}, "b")
    assert (spec["impostors"], spec["seed"], spec["name"]) == (10000, 0, None)
