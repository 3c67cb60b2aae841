print("AllocatorSvc")
