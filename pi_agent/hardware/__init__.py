"""GPIO button and status LEDs (gpiozero adapters) and their pure pattern logic."""
