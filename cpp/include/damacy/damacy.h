// The whole damacy C++ API.
#pragma once

#include "damacy/config.h"
#include "damacy/errors.h"
#include "damacy/pipeline.h"
