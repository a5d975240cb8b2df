#include "CSockDiag.h"
int tandem_sockdiag_placeholder(void) { return 0; }
