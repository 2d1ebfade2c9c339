"""The objective: quantiles, their transforms, the optimum they imply, the losses, one class per method."""
