"""The optimizer comparison example runs its whole pipeline on a tiny budget."""

import json
import math

import pytest


def test_optimizer_comparison_writes_its_figures(tmp_path, monkeypatch, load_example):
    example = load_example("optimizer_comparison", "run_comparison")
    quadratic, saddle = example.SURFACES[0].name, example.SURFACES[2].name
    out = example.run_comparison(
        tmp_path, steps=16, digits_steps=3, first_order=("jdl:adam",),
        second_order=("jdl:newton", "jdl:saddle_free_newton"), network_second_order=(),
        hidden=(8,), surfaces=(quadratic, saddle),
    )
    for path in out["files"][:2]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    summary = json.loads(out["files"][2].read_text())
    assert summary["final_loss"][quadratic]["jdl:newton"] == pytest.approx(0.0, abs=1e-10)
    assert summary["final_loss"][saddle]["jdl:newton"] == pytest.approx(0.0, abs=1e-10)  # stuck on the saddle
    assert summary["escape_step"][saddle]["jdl:newton"] is None
    assert summary["escape_step"][saddle]["jdl:saddle_free_newton"] is not None  # escaped within 16 steps
    digits_losses = summary["final_loss"]["digits MLP"]
    assert set(digits_losses) == {"jdl:adam"}
    assert all(math.isfinite(v) for v in digits_losses.values())
