"""The build-once cache helper: keys follow every setting not explicitly ignored; one build, whole or none."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from trainables.training.cache import build_once, settings_key, texts_digest


@dataclass
class Inner:
    depth: int = 2
    label: str = "x"


@dataclass
class Settings:
    lr: float = 1e-3
    names: tuple[str, ...] = ("q", "v")
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize(
    ("a", "b", "ignore", "same"),
    [
        (Settings(), Settings(), (), True),
        (Settings(), Settings(lr=1e-3 + 1e-12), (), False),  # floats are written exactly
        (Settings(), Settings(names=("q",)), (), False),
        (Settings(), Settings(inner=Inner(depth=3)), (), False),  # nested dataclasses count
        (Settings(), Settings(inner=Inner(depth=3)), ("s.inner.depth",), True),
        (Settings(), Settings(inner=Inner(depth=3)), ("s.inner.label",), False),
        (Settings(), Settings(lr=2.0), ("s.inner",), False),
    ],
)
def test_settings_key_follows_every_field_not_ignored(a, b, ignore, same):
    assert (settings_key({"s": a}, ignore=ignore) == settings_key({"s": b}, ignore=ignore)) is same


def test_settings_key_parts_and_versions_count():
    assert settings_key({"format": 1, "s": Settings()}) != settings_key({"format": 2, "s": Settings()})
    assert len(settings_key({"s": Settings()}, length=20)) == 20


def test_an_ignored_name_must_be_a_field():
    with pytest.raises(ValueError, match="'s.rate' in the ignored fields names no field"):
        settings_key({"s": Settings()}, ignore=("s.rate",))
    with pytest.raises(ValueError, match="'t.lr' in the ignored fields"):
        settings_key({"s": Settings()}, ignore=("t.lr",))
    with pytest.raises(TypeError, match="a object has no JSON form"):
        settings_key({"s": object()})


def test_texts_digest_is_length_prefixed():
    assert texts_digest(["ab"]) != texts_digest(["a", "b"])
    assert texts_digest(iter(["a", "b"])) == texts_digest(["a", "b"])


def _writer(calls: list, content: str = "built"):
    def build(staging):
        calls.append(staging)
        (staging / "result.txt").write_text(content)

    return build


def test_builds_once_into_staging_then_reuses(tmp_path):
    calls: list = []
    path = build_once(tmp_path / "thing", _writer(calls))
    assert build_once(tmp_path / "thing", _writer(calls)) == path == tmp_path / "thing"
    assert len(calls) == 1 and calls[0] != path and not calls[0].exists()
    assert (path / "result.txt").read_text() == "built"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing", "thing.lock"]


def test_a_crashed_builders_staging_folder_is_replaced(tmp_path):
    stale = tmp_path / ".thing.tmp"  # a process died while building
    stale.mkdir()
    (stale / "half.txt").write_text("half")
    path = build_once(tmp_path / "thing", _writer([]))
    assert sorted(p.name for p in path.iterdir()) == ["result.txt"] and not stale.exists()


def test_a_failed_build_leaves_nothing_and_the_next_call_builds(tmp_path):
    def failing(staging):
        (staging / "half.txt").write_text("half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        build_once(tmp_path / "thing", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing.lock"]
    calls: list = []
    build_once(tmp_path / "thing", _writer(calls))
    assert len(calls) == 1


def test_concurrent_callers_wait_for_one_build(tmp_path):
    calls: list = []
    started = threading.Event()

    def slow(staging):
        started.set()
        threading.Event().wait(0.2)  # the other caller arrives while this one builds
        _writer(calls)(staging)

    first = threading.Thread(target=build_once, args=(tmp_path / "thing", slow))
    first.start()
    started.wait()
    build_once(tmp_path / "thing", _writer(calls, "second"))
    first.join()
    assert len(calls) == 1 and (tmp_path / "thing" / "result.txt").read_text() == "built"


def test_a_folder_put_in_place_without_the_lock_wins(tmp_path):
    target = tmp_path / "thing"

    def racing(staging):
        target.mkdir()
        (target / "result.txt").write_text("theirs")
        (staging / "result.txt").write_text("ours")

    assert build_once(target, racing) == target
    assert (target / "result.txt").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing", "thing.lock"]
