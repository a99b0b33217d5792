#ifndef THREADBARE_CZLIB_SHIM_H
#define THREADBARE_CZLIB_SHIM_H

/* HdrHistogram's compressed encoding is zlib's format (a deflate stream with zlib's header),
 * which the interval log (.hlog) carries in base64. */
#include <zlib.h>

#endif
