// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title StateSetAnchor
/// @notice Registry of Merkle commitment roots produced by the StateSet verifiable event sequencer.
/// @dev Written from the interface description in ves-wire.md §6.5 so that one deployed registry
///      serves both sequencer implementations: every function selector, event topic and revert string
///      matches, and storage is declared in the same order. The registry only records commitments;
///      it does not enforce chaining between commitments of a stream (that happens off-chain).
contract StateSetAnchor {
    /// @notice One anchored batch commitment.
    struct Commitment {
        bytes32 batchId;
        bytes32 tenantId;
        bytes32 storeId;
        bytes32 eventsRoot;
        bytes32 stateRoot;
        uint64 sequenceStart;
        uint64 sequenceEnd;
        uint32 eventCount;
        uint256 anchoredAt;
        address anchoredBy;
    }

    /// @notice Commitments by batch id; `anchoredAt == 0` means "not anchored".
    mapping(bytes32 => Commitment) public commitments;

    /// @notice Highest anchored sequence number per stream, keyed by
    ///         `keccak256(abi.encodePacked(tenantId, storeId))`.
    mapping(bytes32 => uint64) public latestSequence;

    /// @notice Every anchored batch id, in anchoring order.
    bytes32[] public anchoredBatches;

    /// @notice The account allowed to anchor (unless permissionless) and to change settings.
    address public owner;

    /// @notice When true, any account may anchor.
    bool public permissionless;

    /// @notice Emitted once per anchored batch, by `anchor` and for each item of `anchorBatch`.
    event CommitmentAnchored(
        bytes32 indexed batchId,
        bytes32 indexed tenantId,
        bytes32 storeId,
        bytes32 eventsRoot,
        bytes32 stateRoot,
        uint64 sequenceStart,
        uint64 sequenceEnd,
        uint32 eventCount,
        uint256 timestamp
    );

    /// @notice Emitted once per `anchorBatch` call; `batchRoot` is `keccak256(abi.encodePacked(batchIds))`.
    event BatchAnchored(bytes32 indexed batchRoot, uint256 commitmentCount, uint256 timestamp);

    modifier onlyAuthorized() {
        require(permissionless || msg.sender == owner, "Not authorized");
        _;
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "Not owner");
        _;
    }

    constructor(bool _permissionless) {
        owner = msg.sender;
        permissionless = _permissionless;
    }

    /// @notice Anchors one batch commitment.
    function anchor(
        bytes32 batchId,
        bytes32 tenantId,
        bytes32 storeId,
        bytes32 eventsRoot,
        bytes32 stateRoot,
        uint64 sequenceStart,
        uint64 sequenceEnd,
        uint32 eventCount
    ) external onlyAuthorized {
        _record(batchId, tenantId, storeId, eventsRoot, stateRoot, sequenceStart, sequenceEnd, eventCount, true);
    }

    /// @notice Anchors several batch commitments in one transaction; all arrays must have equal length.
    /// @dev Unlike `anchor`, an item with `eventCount == 0` is accepted (as the existing registry does).
    function anchorBatch(
        bytes32[] calldata batchIds,
        bytes32[] calldata tenantIds,
        bytes32[] calldata storeIds,
        bytes32[] calldata eventsRoots,
        bytes32[] calldata stateRoots,
        uint64[] calldata sequenceStarts,
        uint64[] calldata sequenceEnds,
        uint32[] calldata eventCounts
    ) external onlyAuthorized {
        uint256 count = batchIds.length;
        require(
            tenantIds.length == count && storeIds.length == count && eventsRoots.length == count
                && stateRoots.length == count && sequenceStarts.length == count && sequenceEnds.length == count
                && eventCounts.length == count,
            "Array length mismatch"
        );
        for (uint256 i = 0; i < count; i++) {
            _record(
                batchIds[i],
                tenantIds[i],
                storeIds[i],
                eventsRoots[i],
                stateRoots[i],
                sequenceStarts[i],
                sequenceEnds[i],
                eventCounts[i],
                false
            );
        }
        emit BatchAnchored(keccak256(abi.encodePacked(batchIds)), count, block.timestamp);
    }

    /// @notice True when `batchId` is anchored with exactly `eventsRoot`.
    function verifyEventsRoot(bytes32 batchId, bytes32 eventsRoot) external view returns (bool) {
        Commitment storage c = commitments[batchId];
        return c.anchoredAt > 0 && c.eventsRoot == eventsRoot;
    }

    /// @notice The anchored commitment of `batchId`; reverts with "Not anchored" when there is none.
    function getCommitment(bytes32 batchId)
        external
        view
        returns (
            bytes32 tenantId,
            bytes32 storeId,
            bytes32 eventsRoot,
            bytes32 stateRoot,
            uint64 sequenceStart,
            uint64 sequenceEnd,
            uint32 eventCount,
            uint256 anchoredAt,
            address anchoredBy
        )
    {
        Commitment storage c = commitments[batchId];
        require(c.anchoredAt > 0, "Not anchored");
        return (
            c.tenantId,
            c.storeId,
            c.eventsRoot,
            c.stateRoot,
            c.sequenceStart,
            c.sequenceEnd,
            c.eventCount,
            c.anchoredAt,
            c.anchoredBy
        );
    }

    /// @notice Highest anchored sequence number of the stream (tenantId, storeId); 0 when none.
    function getLatestSequence(bytes32 tenantId, bytes32 storeId) external view returns (uint64) {
        return latestSequence[_streamKey(tenantId, storeId)];
    }

    /// @notice Number of anchored batches.
    function getAnchoredCount() external view returns (uint256) {
        return anchoredBatches.length;
    }

    /// @notice True when `batchId` is anchored.
    function isAnchored(bytes32 batchId) external view returns (bool) {
        return commitments[batchId].anchoredAt > 0;
    }

    /// @notice Hands the registry to `newOwner`.
    /// @dev The zero address is refused: it would lock the registry for good (there is no renounce).
    function transferOwnership(address newOwner) external onlyOwner {
        require(newOwner != address(0), "Invalid owner");
        owner = newOwner;
    }

    /// @notice Lets anyone anchor (`true`) or only the owner (`false`).
    function setPermissionless(bool _permissionless) external onlyOwner {
        permissionless = _permissionless;
    }

    function _record(
        bytes32 batchId,
        bytes32 tenantId,
        bytes32 storeId,
        bytes32 eventsRoot,
        bytes32 stateRoot,
        uint64 sequenceStart,
        uint64 sequenceEnd,
        uint32 eventCount,
        bool rejectEmpty
    ) private {
        // NB: checked in this order so that a batch failing several checks reverts with the same
        // string as on the existing registry.
        require(commitments[batchId].anchoredAt == 0, "Already anchored");
        require(sequenceEnd >= sequenceStart, "Invalid sequence range");
        require(!rejectEmpty || eventCount > 0, "Empty batch");

        commitments[batchId] = Commitment({
            batchId: batchId,
            tenantId: tenantId,
            storeId: storeId,
            eventsRoot: eventsRoot,
            stateRoot: stateRoot,
            sequenceStart: sequenceStart,
            sequenceEnd: sequenceEnd,
            eventCount: eventCount,
            anchoredAt: block.timestamp,
            anchoredBy: msg.sender
        });

        bytes32 streamKey = _streamKey(tenantId, storeId);
        if (sequenceEnd > latestSequence[streamKey]) {
            latestSequence[streamKey] = sequenceEnd;
        }
        anchoredBatches.push(batchId);

        emit CommitmentAnchored(
            batchId, tenantId, storeId, eventsRoot, stateRoot, sequenceStart, sequenceEnd, eventCount, block.timestamp
        );
    }

    function _streamKey(bytes32 tenantId, bytes32 storeId) private pure returns (bytes32) {
        return keccak256(abi.encodePacked(tenantId, storeId));
    }
}
