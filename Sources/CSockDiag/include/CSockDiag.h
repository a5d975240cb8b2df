int tandem_sockdiag_placeholder(void);
