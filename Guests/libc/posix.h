/* One include for programs that build both natively and as swiftvmm guests (SVMM_GUEST). */
#ifdef SVMM_GUEST
#include "libc/libc.h"
#else
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#endif
