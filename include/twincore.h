/* twincore: a libev reactor for network IO and a native CPU pool whose
 * results come back to the loop as futures.  Include this one header. */
#ifndef TWINCORE_H
#define TWINCORE_H

#include "twincore/common.h"
#include "twincore/error.h"
#include "twincore/loop.h"
#include "twincore/timer.h"
#include "twincore/signal.h"
#include "twincore/async.h"
#include "twincore/stream.h"
#include "twincore/server.h"
#include "twincore/tcp.h"
#include "twincore/unix.h"
#include "twincore/udp.h"
#include "twincore/poll.h"
#include "twincore/tls.h"
#include "twincore/pool.h"
#include "twincore/future.h"
#include "twincore/resolve.h"
#include "twincore/process.h"

#define TC_VERSION_MAJOR 0
#define TC_VERSION_MINOR 1
#define TC_VERSION_PATCH 0

#endif
