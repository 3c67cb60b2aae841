print("NodeApplier")
