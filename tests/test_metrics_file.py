"""ltxtrain.metrics_file: the one reader/writer of metrics.jsonl."""

import json

from ltxtrain import metrics_file


def _write(path, rows, partial: str = ""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + partial)


def test_append_then_read_in_order(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert metrics_file.read_rows(path) == [] and metrics_file.last_row(path) is None
    for step in (1, 2, 3):
        metrics_file.append(path, {"step": step, "loss": 1.0 / step})
    assert [r["step"] for r in metrics_file.read_rows(path)] == [1, 2, 3]
    assert path.read_text().count("\n") == 3
    assert metrics_file.last_row(path) == {"step": 3, "loss": 1.0 / 3}
    assert metrics_file.last_step(path) == 3


def test_partial_last_line_and_bad_lines_are_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\nnot json\n[1, 2]\n\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    assert [r["step"] for r in metrics_file.read_rows(path)] == [1, 2]
    assert metrics_file.last_row(path) == {"step": 2, "loss": 0.4}  # the row being written is not the last one
    assert metrics_file.tail(path, 5) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]


def test_limit_keeps_the_first_rows_and_tail_the_last(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, [{"step": s} for s in range(1, 11)])
    assert [r["step"] for r in metrics_file.read_rows(path, limit=3)] == [1, 2, 3]
    assert [r["step"] for r in metrics_file.tail(path, 3)] == [8, 9, 10]
    assert metrics_file.tail(path, 0) == []


def test_tail_reads_back_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_file, "_TAIL_BLOCK", 16)  # smaller than one row: every row straddles a boundary
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": s / 7} for s in range(1, 41)]
    _write(path, rows, partial='{"step": 41')
    assert metrics_file.tail(path, 4) == rows[-4:]
    assert metrics_file.tail(path, 100) == rows
    assert metrics_file.last_row(path) == rows[-1]


def test_truncate_from_drops_the_step_and_after(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, [{"step": s, "loss": 1.0} for s in range(1, 7)] + [{"note": "no step"}], partial='{"step": 7')
    metrics_file.truncate_from(path, 4)
    assert [r.get("step") for r in metrics_file.read_rows(path)] == [1, 2, 3, None]
    assert not (tmp_path / "metrics.jsonl.tmp").exists()
    metrics_file.append(path, {"step": 4, "loss": 0.25})  # the restarted run logs step 4 again, once
    assert [r.get("step") for r in metrics_file.read_rows(path)] == [1, 2, 3, None, 4]
    assert metrics_file.last_step(path) == 4


def test_is_a_leaf_module():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(metrics_file))
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.startswith("ltxtrain") or m == "" for m in imported), imported


def test_train_callback_replaces_rows_past_the_checkpoint_a_run_went_back_to(tmp_path):
    from ltxtrain.train.run import metrics_file_callback

    path = tmp_path / "metrics.jsonl"
    _write(path, [{"step": 1, "loss": 9.0}], partial='{"step": 2')  # an earlier run of the job crashed mid-row

    def report(cb, step, loss):
        cb.after_report(None, [{"row": {"step": step, "loss": loss}}], None)

    cb = metrics_file_callback(str(path))
    for step in (2, 3, 4):
        report(cb, step, 1.0)
    cb.after_report(None, [{"other": 1}], None)  # a checkpoint report without a row writes nothing
    for step in (3, 4, 5):  # a worker died: the group restarted from the checkpoint at step 2
        report(cb, step, 2.0)
    rows = metrics_file.read_rows(path)
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 9.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0)]

    again = metrics_file_callback(str(path))  # the whole job run again from an earlier checkpoint
    report(again, 2, 3.0)
    assert [(r["step"], r["loss"]) for r in metrics_file.read_rows(path)] == [(1, 9.0), (2, 3.0)]
