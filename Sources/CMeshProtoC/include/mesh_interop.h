#ifndef MESH_INTEROP_H
#define MESH_INTEROP_H
#include <stddef.h>
#endif
