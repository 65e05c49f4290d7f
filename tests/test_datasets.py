"""Built-in data sets ship inside the package (a wheel or a bare clone has no sibling folder)."""

import hashlib
from pathlib import Path

import pytest

from edgeslim import data


def test_builtin_sets_load_from_the_package_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGESLIM_DATA_DIR", raising=False)
    shipped = data.packaged_data()
    for spec, entry in data.BUILTIN.items():
        if spec.startswith("conll2003"):
            assert not (shipped / entry.file).exists()  # Reuters text: never redistributed
            continue
        assert data.data_dirs(None, spec) == [shipped]  # nothing looked up beside the checkout
        examples = data.load(spec)
        assert len(examples) > 400 and all(examples.texts[:50])
        if entry.label:
            assert examples.labels and len(set(examples.labels)) >= 2


def test_shipped_files_match_their_checksums_and_carry_licences() -> None:
    shipped = data.packaged_data()
    lines = (shipped / "SHA256SUMS").read_text().splitlines()
    assert len(lines) >= 8
    for line in lines:
        digest, name = line.split("  ")
        assert hashlib.sha256((shipped / name).read_bytes()).hexdigest() == digest, name
    readme = (shipped / "README.md").read_text()
    for source in ("Socher", "Cer", "Li & Roth", "Merity", "CC BY-SA"):
        assert source in readme
    assert (shipped / "stsb" / "ORIGINAL_LICENSE.txt").exists()
    for folder in ("sst2", "trec", "wikitext2"):
        assert "License" in (shipped / folder / "LICENSE.md").read_text()


def test_every_shipped_file_is_declared_as_package_data() -> None:
    """An installed wheel carries what pyproject's package-data globs name: all of it."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = data.packaged_data()
    files = [p.relative_to(shipped.parent).as_posix() for p in shipped.rglob("*") if p.is_file()]
    assert len(files) >= 12
    for name in files:
        assert any(fnmatch.fnmatch(name, g) for g in globs["edgeslim"]), f"{name} would not ship"


def test_data_dir_overrides_and_missing_set_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeslim.errors import InputError

    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "glue_dev.tsv").write_text("sentence\tlabel\na fine film\t1\nawful\t0\n")
    assert len(data.load("sst2:dev", data_dir=tmp_path)) == 2  # an explicit folder comes first
    monkeypatch.delenv("EDGESLIM_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "beside_checkout", lambda: [tmp_path / "nowhere"])
    with pytest.raises(InputError, match="--data-dir"):
        data.load("conll2003:valid")


def test_pad_right_pads_with_the_pad_id_and_cuts_at_width() -> None:
    feeds = data.pad([[5, 6, 7], [8]], [[0, 0, 1], [0]], pad_id=1)
    assert feeds["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert feeds["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert data.pad([[5, 6, 7]], [[0, 0, 1]], 1, width=2)["input_ids"].tolist() == [[5, 6]]
