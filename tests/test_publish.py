"""A feature partition is published whole: a reader (the service's reload) never sees a missing
or half-written one while `features build` rewrites it."""

from __future__ import annotations

import datetime as dt
import threading

import pyarrow as pa

from features.engine import partition_dir, partitions, publish_partition, read_features

DAY = dt.date(2024, 1, 1)


def table(rows: int) -> pa.Table:
    return pa.table({"customer_id": [f"c{i}" for i in range(rows)],
                     "frequency": list(range(rows))})


def test_readers_never_see_a_half_written_partition(tmp_path):
    part = partition_dir(tmp_path, DAY)
    publish_partition(table(1000), part)
    stop, seen, errors = threading.Event(), set(), []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add(len(read_features(tmp_path, DAY)))
            except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(60):
        publish_partition(table(1000 if i % 2 else 50_000), part)
    stop.set()
    reader.join()
    assert errors == []
    assert seen <= {1000, 50_000} and seen


def test_staging_folders_and_files_are_not_partitions(tmp_path):
    publish_partition(table(3), partition_dir(tmp_path, DAY))
    publish_partition(table(4), partition_dir(tmp_path, DAY))
    (tmp_path / ".as_of=2024-02-01.abc").mkdir()  # a build that died while staging
    assert list(partitions(tmp_path)) == [DAY]
    assert [p.name for p in partition_dir(tmp_path, DAY).iterdir()] == ["part-0.parquet"]
    assert len(read_features(tmp_path)) == 4
