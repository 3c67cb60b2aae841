print("ProvisionSvc")
