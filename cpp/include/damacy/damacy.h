// The whole damacy C++ API.
#pragma once

#include "damacy/arrays.h"
#include "damacy/config.h"
#include "damacy/errors.h"
#include "damacy/log.h"
#include "damacy/pipeline.h"
