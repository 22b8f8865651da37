"""``python -m genunlearn ...`` (and ``torchrun --nproc-per-node N -m genunlearn unlearn ...``): the CLI."""

from genunlearn.cli import main

if __name__ == "__main__":
    main()
