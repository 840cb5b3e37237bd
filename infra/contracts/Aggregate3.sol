// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// The `aggregate3` call of Multicall3, which the mainnets StreamGate knows carry at
/// 0xcA11bde05977b3631167028862bE2a173976CA11. A local anvil chain has none; the end-to-end suites place
/// this contract's code at that address to check the batched path.
contract Aggregate3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData) {
        returnData = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool success, bytes memory data) = calls[i].target.call(calls[i].callData);
            require(success || calls[i].allowFailure, "Aggregate3: call failed");
            returnData[i] = Result(success, data);
        }
    }
}
