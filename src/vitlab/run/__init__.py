"""The run layer: what every command shares about a run (the checkpoint format
and rebuilding its model, the device/seed/RNG/distributed runtime, run
folders and their resume rules). It sits beneath training, evaluation, the
analyses, comparison and sweeps, and imports none of them."""
