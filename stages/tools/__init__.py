"""What a user runs by hand: predict on photos, regenerate the README's tables and the plots
page's template."""
