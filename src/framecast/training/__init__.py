"""Training policy in one place: the LightningModule (loss, optimiser, sampling schedules), the
runner that builds the Trainer around it (fit), the test pass (testing), the checks of data a
model cannot take (checks), and the run folder's logs and progress."""
