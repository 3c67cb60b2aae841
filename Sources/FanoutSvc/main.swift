print("FanoutSvc")
