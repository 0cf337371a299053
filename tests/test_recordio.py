"""RecordIO (insightface train.rec/.idx/property) reading and writing, without MXNet."""

from __future__ import annotations

import logging
import os
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from fiqa.data import recordio
from fiqa.data.ms1m import ms1m_index, read_property, write_ms1m, write_property
from fiqa.data.recordio import (
    RecordHeader,
    RecordIOError,
    RecordIOReader,
    RecordIOWriter,
    pack_record,
    unpack_record,
)

MAGIC_LE = b"\x0a\x23\xd7\xce"  # 0xced7230a, little-endian, spelled out by hand


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """Six small real JPEGs: 32x32 crops of skimage's astronaut."""
    image = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    crops = [image[y : y + 32, x : x + 32] for y, x in [(60, 180), (100, 200), (0, 0)] * 2]
    return [
        cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, 70 + i])[1].tobytes()
        for i, c in enumerate(crops)
    ]


def _write_plain(path: Path, payloads: list[bytes]) -> list[int]:
    with RecordIOWriter(path) as writer:
        return [writer.write(key, p) for key, p in enumerate(payloads)]


def test_pack_unpack_scalar_and_vector_labels() -> None:
    header, image = unpack_record(pack_record(RecordHeader(0, 3.5, 7, 9), b"jpeg"))
    assert header == RecordHeader(0, 3.5, 7, 9) and image == b"jpeg"
    header, image = unpack_record(pack_record(RecordHeader(0, (1.0, 2.5, -4.0), 1), b"xy"))
    assert header == RecordHeader(3, (1.0, 2.5, -4.0), 1, 0) and image == b"xy"
    with pytest.raises(RecordIOError, match="short_header"):
        unpack_record(b"\0" * 10)


def test_one_record_is_byte_exact(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path / "a.rec") as writer:
        writer.write(5, pack_record(RecordHeader(0, 3.0, 7, 0), b"abcde"))
        writer.write(6, pack_record(RecordHeader(0, (1.0, 2.0)), b""))
    first = (
        MAGIC_LE + b"\x1d\x00\x00\x00"  # length 24 + 5 = 29, cflag 0
        + b"\x00\x00\x00\x00" + b"\x00\x00\x40\x40"  # flag 0, label 3.0f
        + b"\x07" + b"\x00" * 7 + b"\x00" * 8  # id 7, id2 0
        + b"abcde" + b"\x00" * 3  # image, padded to 4 bytes
    )  # fmt: skip
    second = (
        MAGIC_LE + b"\x20\x00\x00\x00"  # 24 + 2 * 4 = 32
        + b"\x02\x00\x00\x00" + b"\x00" * 4 + b"\x00" * 16  # flag 2, label field 0
        + b"\x00\x00\x80\x3f" + b"\x00\x00\x00\x40"  # 1.0f, 2.0f
    )  # fmt: skip
    assert (tmp_path / "a.rec").read_bytes() == first + second
    assert (tmp_path / "a.idx").read_text() == "5\t0\n6\t40\n"


def test_split_record_read_from_hand_built_parts(tmp_path: Path) -> None:
    payload = b"ABCD" + MAGIC_LE + b"EFGH" + MAGIC_LE + b"xyz"
    parts = (
        MAGIC_LE + struct.pack("<I", 1 << 29 | 4) + b"ABCD"  # start
        + MAGIC_LE + struct.pack("<I", 2 << 29 | 4) + b"EFGH"  # middle
        + MAGIC_LE + struct.pack("<I", 3 << 29 | 3) + b"xyz\0"  # end, padded
    )  # fmt: skip
    whole = MAGIC_LE + struct.pack("<I", 2) + b"ok\0\0"
    (tmp_path / "s.rec").write_bytes(whole + parts + whole)
    reader = RecordIOReader(tmp_path / "s.rec")  # no .idx: rebuilt by scanning
    assert reader.keys == [0, 1, 2]
    assert [p for _, p in reader.scan()] == [b"ok", payload, b"ok"]
    assert reader.read(1) == payload and reader.offset(2) == 12 + len(parts)
    # The writer splits the same way dmlc-core does; an unaligned magic stays inline.
    assert recordio.frame_record(payload) == parts
    assert (
        recordio.frame_record(b"A" + MAGIC_LE) == MAGIC_LE + b"\x05\0\0\0A" + MAGIC_LE + b"\0\0\0"
    )


def test_split_record_with_a_stray_part_is_damage(tmp_path: Path) -> None:
    (tmp_path / "b.rec").write_bytes(MAGIC_LE + struct.pack("<I", 3 << 29 | 4) + b"ABCD")
    with pytest.raises(RecordIOError, match="bad_continuation"):
        list(RecordIOReader(tmp_path / "b.rec").scan())


def test_missing_idx_is_rebuilt_and_saved(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = tmp_path / "train.rec"
    _write_plain(rec, [b"one", b"two" * 50, b"three"])
    expected = (tmp_path / "train.idx").read_text()
    (tmp_path / "train.idx").unlink()
    with caplog.at_level(logging.WARNING), RecordIOReader(rec) as reader:
        assert [reader.read(k) for k in reader.keys] == [b"one", b"two" * 50, b"three"]
    assert "rebuilding" in caplog.text
    assert (tmp_path / "train.idx").read_text() == expected


def test_rebuilt_idx_stays_in_memory_when_dir_is_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = tmp_path / "train.rec"
    _write_plain(rec, [b"one", b"two"])
    (tmp_path / "train.idx").unlink()
    monkeypatch.setattr(os, "access", lambda *_args, **_kw: False)
    assert RecordIOReader(rec).read(1) == b"two"
    assert not (tmp_path / "train.idx").exists()


@pytest.mark.parametrize(
    "idx_text",
    ["0\t0\nnot a line\n", "0\t0\n1\t4\n2\t200\n", "0\t0\n1\t0\n2\t28\n", "0\t0\n1\t20\n"],
    ids=["garbage", "wrong-offset", "duplicate-offset", "stale-short"],
)
def test_damaged_idx_is_rebuilt(tmp_path: Path, idx_text: str) -> None:
    rec = tmp_path / "train.rec"
    offsets = _write_plain(rec, [b"a" * 9, b"b" * 5, b"c" * 13])
    assert offsets == [0, 20, 36]
    (tmp_path / "train.idx").write_text(idx_text)
    reader = RecordIOReader(rec)
    assert [reader.read(k) for k in reader.keys] == [b"a" * 9, b"b" * 5, b"c" * 13]
    assert (tmp_path / "train.idx").read_text() == "0\t0\n1\t20\n2\t36\n"


def test_truncated_last_record(tmp_path: Path, jpegs: list[bytes]) -> None:
    rec = tmp_path / "train.rec"
    payloads = [pack_record(RecordHeader(0, float(i % 2)), j) for i, j in enumerate(jpegs)]
    offsets = _write_plain(rec, payloads)
    rec.write_bytes(rec.read_bytes()[:-10])
    reader = RecordIOReader(rec)  # the .idx is still fine
    scanned = []
    with pytest.raises(RecordIOError, match="truncated") as info:
        scanned.extend(reader.scan())
    assert [o for o, _ in scanned] == offsets[:-1] and info.value.offset == offsets[-1]
    assert [p for _, p in scanned] == payloads[:-1]
    with pytest.raises(RecordIOError, match="truncated"):
        reader.read(5)
    index = ms1m_index(reader)
    assert index["key"].tolist() == [0, 1, 2, 3, 4]
    assert index["identity"].tolist() == ["0", "1", "0", "1", "0"]
    assert index.attrs["damaged"] == [(5, "truncated")]
    # Without the .idx the scan stops at the damage; the index holds the good records.
    (tmp_path / "train.idx").unlink()
    rebuilt = RecordIOReader(rec)
    assert rebuilt.keys == [0, 1, 2, 3, 4] and rebuilt.damaged == [(offsets[-1], "truncated")]
    assert not (tmp_path / "train.idx").exists()  # a damaged file's index is not saved
    assert ms1m_index(rebuilt).attrs["damaged"] == [(offsets[-1], "truncated")]


def test_bad_magic(tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    payload = pack_record(RecordHeader(0, 4.0), b"x" * 100)
    offsets = _write_plain(rec, [payload] * 300)  # > 256 records: not all are checked on load
    data = bytearray(rec.read_bytes())
    data[offsets[7] : offsets[7] + 4] = b"JUNK"
    rec.write_bytes(bytes(data))
    reader = RecordIOReader(rec)
    with pytest.raises(RecordIOError, match="bad_magic") as info:
        reader.read(7)
    assert info.value.offset == offsets[7] and info.value.reason == "bad_magic"
    assert str(offsets[7]) in str(info.value) and str(rec) in str(info.value)
    with pytest.raises(RecordIOError, match="bad_magic"):
        list(reader.scan())
    assert reader.read(8) == payload  # the .idx was kept: records after the damage are readable
    index = ms1m_index(reader)
    assert len(index) == 299 and set(index["identity"]) == {"4"}
    assert index.attrs["damaged"] == [(7, "bad_magic")]


def test_write_ms1m_layout_and_index(tmp_path: Path, jpegs: list[bytes]) -> None:
    labels = [1, 1, 1, 0, 0, 2]
    assert write_ms1m(tmp_path, zip(labels, jpegs, strict=True)) == 6
    assert read_property(tmp_path / "property") == (3, 32, 32)
    reader = RecordIOReader(tmp_path / "train.rec")
    header, image = unpack_record(reader.read(0))
    assert header.label == (7.0, 10.0) and image == b""  # images 1..6, identities 7..9
    ranges = [unpack_record(reader.read(k))[0].label for k in (7, 8, 9)]
    assert ranges == [(1.0, 4.0), (4.0, 6.0), (6.0, 7.0)]  # in order of appearance
    _, first_image = unpack_record(reader.read(1))
    assert first_image == jpegs[0]
    index = ms1m_index(reader)
    assert index["key"].tolist() == [1, 2, 3, 4, 5, 6]
    assert index["identity"].tolist() == ["1", "1", "1", "0", "0", "2"]
    assert index["offset"].tolist() == [reader.offset(k) for k in range(1, 7)]
    assert index.attrs == {"damaged": [], "property_mismatch": None}
    assert [unpack_record(reader.read(k))[1] for k in (1, 2, 3)] == jpegs[:3]
    with pytest.raises(ValueError, match="identity 1 appears again after other identities"):
        write_ms1m(tmp_path / "mixed", zip([1, 0, 1], jpegs, strict=False))
    assert not (tmp_path / "mixed" / "train.rec").exists()  # nothing half-written is published


def test_ms1m_index_joins_an_identity_split_over_two_ranges_and_lists_overlaps_once(
    tmp_path: Path, jpegs: list[bytes]
) -> None:
    # images 1..4 (identity 7, 7, 8, 7); ranges 5..7: [1, 3) -> 7, [3, 4) -> 8, [2, 5) overlaps
    with RecordIOWriter(tmp_path / "train.rec") as writer:
        writer.write(0, pack_record(RecordHeader(2, (5.0, 8.0)), b""))
        for key, label in zip((1, 2, 3, 4), (7, 7, 8, 7), strict=True):
            writer.write(key, pack_record(RecordHeader(0, float(label), key), jpegs[key]))
        for rkey, (start, end) in zip((5, 6, 7), ((1, 3), (3, 4), (2, 5)), strict=True):
            writer.write(rkey, pack_record(RecordHeader(2, (start, end), rkey), b""))
    write_property(tmp_path / "property", 2, 32, 32)
    index = ms1m_index(RecordIOReader(tmp_path / "train.rec"))
    assert index["key"].tolist() == [1, 2, 3, 4]  # key 2 once, though two ranges claim it
    assert index["identity"].tolist() == ["7", "7", "8", "7"]  # 7 in two ranges: one identity
    assert index.attrs["damaged"] == [(7, "overlapping_range")]
    assert index.attrs["property_mismatch"] is None  # 2 identities, as declared


def test_ms1m_index_survives_a_damaged_range_record(tmp_path: Path, jpegs: list[bytes]) -> None:
    write_ms1m(tmp_path, zip([0, 0, 1, 1, 2, 2], jpegs, strict=True))
    rec = tmp_path / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-4])  # cuts into the last range record (key 9)
    index = ms1m_index(RecordIOReader(rec))
    assert index["identity"].tolist() == ["0", "0", "1", "1", "2", "2"]  # read one by one
    assert index.attrs["damaged"] == [(9, "truncated")]


def test_property_mismatch_is_recorded(
    tmp_path: Path, jpegs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    write_ms1m(tmp_path, zip([0, 0, 1], jpegs[:3], strict=True))
    write_property(tmp_path / "property", 5, 112, 112)
    with caplog.at_level(logging.WARNING):
        index = ms1m_index(RecordIOReader(tmp_path / "train.rec"))
    assert len(index) == 3 and "declares 5 identities" in caplog.text
    assert index.attrs["property_mismatch"] == {
        "path": str(tmp_path / "property"),
        "declared": 5,
        "found": 2,
    }
    with pytest.raises(ValueError, match="num_classes,height,width"):
        (tmp_path / "bad").write_text("85742,112\n")
        read_property(tmp_path / "bad")


def test_reader_is_picklable(tmp_path: Path, jpegs: list[bytes]) -> None:
    write_ms1m(tmp_path, zip([0, 1], jpegs[:2], strict=True))
    reader = RecordIOReader(tmp_path / "train.rec")
    reader.read(1)  # opens the file handle
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.keys == reader.keys and unpack_record(clone.read(2))[1] == jpegs[1]
    assert clone.read_at(reader.offset(1)) == reader.read(1)
    err = pickle.loads(pickle.dumps(RecordIOError(12, "truncated", "x.rec")))
    assert (err.offset, err.reason, str(err)) == (
        12,
        "truncated",
        str(RecordIOError(12, "truncated", "x.rec")),
    )


def test_writer_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), RecordIOWriter(tmp_path / "t.rec") as writer:
        writer.write(0, b"abc")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with RecordIOWriter(tmp_path / "t.rec") as writer:
        writer.write(0, b"abc")
        with pytest.raises(ValueError, match="already written"):
            writer.write(0, b"again")


def test_empty_payloads_and_large_random_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    payloads = [b"", *(rng.bytes(int(n)) for n in rng.integers(1, 5000, 40))]
    payloads.append(b"\0" * 4 + MAGIC_LE * 3 + b"tail")  # consecutive aligned magics
    _write_plain(tmp_path / "r.rec", payloads)
    reader = RecordIOReader(tmp_path / "r.rec")
    assert [reader.read(k) for k in reader.keys] == payloads
    assert [p for _, p in reader.scan()] == payloads


def test_ms1m_index_without_header_reads_every_label(tmp_path: Path, jpegs: list[bytes]) -> None:
    payloads = [
        pack_record(RecordHeader(0, (3.0, 0.25)), jpegs[0]),  # label vector: first value counts
        pack_record(RecordHeader(0, 8.0), jpegs[1]),
        pack_record(RecordHeader(0, (1.0, 2.0)), b""),  # no image: not an image record
    ]
    offsets = _write_plain(tmp_path / "plain.rec", payloads)
    index = ms1m_index(RecordIOReader(tmp_path / "plain.rec"))
    assert index.to_dict("list") == {"key": [0, 1], "offset": offsets[:2], "identity": ["3", "8"]}
    assert index.attrs == {"damaged": [], "property_mismatch": None}
