#ifndef CQRencode_SHIM_H
#define CQRencode_SHIM_H
#include <qrencode.h>
#endif
