"""WGAN-GP on sklearn's 8x8 digits: critic loss E[D(fake)] - E[D(real)] plus
10 * E[(||grad D(x_hat)|| - 1)^2] on random interpolates (Gulrajani et al.; Adam(1e-4, 0.5, 0.9)),
trained with the single-loss step and the alternating one (see gan.py).

    python recipes/generative/wgan_gp.py --out wgan_gp.json
"""
try:
    from recipes.generative import gan
except ImportError:  # run as a script
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from recipes.generative import gan


def main(argv=None):
    return gan.main(argv, defaults={"out": "wgan_gp.json", "loss": "wgan", "gp": 10.0, "lr": 1e-4, "beta_2": 0.9})


if __name__ == "__main__":
    main()
