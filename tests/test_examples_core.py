"""The training-core example runs on a tiny budget."""


def test_train_digits_example_fit_step_by_hand_and_vmapped_ensemble(load_example):
    out = load_example("train_digits").main(epochs=3, members=2)
    assert out["fit_test_accuracy"] > 0.85
    assert out["by_hand_test_accuracy"] > 0.85   # the pure step in a Python loop
    assert len(out["member_accuracy"]) == 2 and min(out["member_accuracy"]) > 0.6
    assert out["ensemble_accuracy"] > 0.6
