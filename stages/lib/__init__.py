"""What the stages share: params, paths and facts, images, data, models, training, metrics."""
