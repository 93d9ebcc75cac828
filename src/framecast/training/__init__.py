"""Training policy in one place: the LightningModule (loss, optimiser, sampling schedules), the
runner that builds the Trainer around it, and the run folder's logs and progress."""
