"""Ready-made experiments on the bundled models (MNIST VAE unlearning, benchmarks)."""
