"""Predicting what a job will cost before it runs (`iprox-ray plan`)."""
