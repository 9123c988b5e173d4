"""Sharpness during training and the 2/η stability bound (the edge of stability).

Full-batch gradient descent with step η is stable along an eigenvector of the
Hessian only while its eigenvalue is below 2/η. Training an MLP on 512 digits with
plain GD (η = 0.5), the sharpness λ_max rises ("progressive sharpening") until it
reaches 2/η = 4, where GD stops it — it cannot settle where λ_max > 2/η (Cohen et
al., ICLR 2021) — and then falls as the cross-entropy saturates and its curvature
fades. With ``main(learning_rate=1.0)`` λ_max starts at 2/η, overshoots, and GD
drives it back down to 2/η, oscillating around the bound for a while.
``SharpnessTracker`` reads λ_max (and λ_min) every 5 steps with at most 20
warm-started Lanczos products per eigenvalue and writes them into the fit
history; the plot shows them against 2/η.

    python examples/hessian_sharpness.py       # ~10 s on a laptop CPU
"""

from __future__ import annotations

import os

import numpy as np
import optax

from jdl.data import load_dataset
from jdl.hessian import SharpnessTracker, plot_sharpness
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import fit

OUT = os.path.join(os.path.dirname(__file__), "results")


def main(learning_rate: float = 0.5, epochs: int = 400) -> None:
    ds = load_dataset("digits")
    data = {k: v[:512] for k, v in ds.train.items()}
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(32,))
    tracker = SharpnessTracker(5, train=False, learning_rate=learning_rate, num_matvecs=20,
                               num_examples=None, track_min=True)
    # batch_size = all 512 examples: one GD step per epoch; readings every 5 steps.
    result = fit(model, cross_entropy, optax.sgd(learning_rate), data, epochs=epochs, batch_size=512,
                 steps_per_call=1, callbacks=[tracker], seed=0, progress=False)
    readings = [r for rec in result.history for r in rec.get("sharpness_readings", [])]
    lam = np.array([r["lambda_max"] for r in readings])
    print(f"{len(readings)} readings, {np.mean([r['num_matvecs'] for r in readings]):.1f} products each "
          f"on average (λmax and λmin)")
    print(f"λmax: {lam[0]:.3f} at step 0 → max {lam.max():.3f}; 2/η = {2 / learning_rate:.3f}")
    print(f"final train loss {result.history[-1]['train_loss']:.4f}")
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "hessian_sharpness.png")
    plot_sharpness(result.history, path, title=f"full-batch GD, η = {learning_rate}: sharpness vs 2/η")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
