#include "mesh_interop.h"
