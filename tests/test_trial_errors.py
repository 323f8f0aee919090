"""Under Ray Tune, a trial whose loss diverges or whose code raises is that trial's error; the others go on."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_a_diverging_and_a_crashing_trial_fail_alone_with_their_cause(
    micro_t5_dir, micro_splits, tmp_path, monkeypatch
):
    import ray
    from ray import tune

    from study import dashboard
    from trainables.trial import math_trainable

    # Ray reads its auth settings once per process; an earlier test may have switched them: set ours again.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    dashboard._reload_ray_config()

    # Three trials, one per case: the model and the lr are tied, since a missing model fails before any lr
    # matters (a full grid's fourth trial, missing x 1e30, checked nothing and cost a worker's start).
    good, missing = str(micro_t5_dir), str(tmp_path / "no-such-model")
    diverging = tmp_path / "diverging-model"  # the same micro T5 under a name of its own
    diverging.symlink_to(micro_t5_dir, target_is_directory=True)
    # 1e30: the weights blow up, the loss is no longer finite
    lr = {good: 3e-3, str(diverging): 1e30, missing: 3e-3}
    param_space = {
        "method": "full",
        "model": tune.grid_search(list(lr)),
        "data_config": "main",
        "train/lr": tune.sample_from(lambda spec: lr[spec.config.model]),
        "train/epochs": 1,
        "train/batch_size": 16,
        "train/warmup_ratio": 0.0,
        "train/max_grad_norm": 0.0,
        "train/eval/max_new_tokens": 8,
        "train/eval/metrics": "accuracy",
        "train/eval/calculator": "off",
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            tune.with_parameters(math_trainable, splits={"main": micro_splits}),
            param_space=param_space,
            run_config=tune.RunConfig(storage_path=str(tmp_path / "store"), name="errors", verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    results = {(r.config["model"], r.config["train/lr"]): r for r in grid}
    assert len(results) == 3
    assert results[good, 3e-3].error is None and "test/accuracy" in results[good, 3e-3].metrics
    assert "loss became" in str(results[str(diverging), 1e30].error)
    assert "could not be loaded" in str(results[missing, 3e-3].error)
